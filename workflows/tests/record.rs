//! The persisted record types (`workflows::record`): wake-up identities and the history format.

use steps::model::{Attempt, Channel, NotificationId, ProviderName, TenantId};
use workflows::machine::{State, StateKind};
use workflows::record::{Cause, HistoryEntry, Wake};

fn wake(version: u64) -> Wake {
    Wake {
        tenant: TenantId::new("acme").unwrap(),
        id: NotificationId::new("n_01HZX3").unwrap(),
        version,
    }
}

#[test]
fn wake_keys_are_deterministic_and_round_trip() {
    assert_eq!(wake(7).key(), "acme/n_01HZX3/7");
    assert_eq!(wake(7).key(), wake(7).key());
    assert_ne!(wake(7).key(), wake(8).key());
    for version in [0, 1, 42, u64::MAX] {
        assert_eq!(Wake::parse_key(&wake(version).key()), Some(wake(version)));
    }
}

#[test]
fn malformed_wake_keys_are_refused() {
    for key in [
        "",
        "acme",
        "acme/n_1",
        "acme/n_1/",
        "acme/n_1/x",
        "acme/n_1/-1",
        "acme/n_1/7/8",
        "/n_1/7",
        "acme//7",
        "ac:me/n_1/7",
    ] {
        assert_eq!(Wake::parse_key(key), None, "{key:?}");
    }
}

#[test]
fn causes_read_and_serialise_as_documented() {
    let twilio = ProviderName::new("twilio").unwrap();
    let cases = [
        (
            Cause::Api { action: "cancel".into() },
            "api cancel",
            r#"{"kind":"api","action":"cancel"}"#,
        ),
        (Cause::WakeUp, "wake-up", r#"{"kind":"wake_up"}"#),
        (
            Cause::Step { step: "filter".into() },
            "step filter",
            r#"{"kind":"step","step":"filter"}"#,
        ),
        (
            Cause::Provider { provider: twilio.clone() },
            "provider twilio",
            r#"{"kind":"provider","provider":"twilio"}"#,
        ),
        (
            Cause::Receipt { provider: twilio },
            "receipt twilio",
            r#"{"kind":"receipt","provider":"twilio"}"#,
        ),
        (
            Cause::Operator { action: "dlq replay".into() },
            "operator dlq replay",
            r#"{"kind":"operator","action":"dlq replay"}"#,
        ),
    ];
    for (cause, text, json) in cases {
        assert_eq!(cause.to_string(), text);
        assert_eq!(serde_json::to_string(&cause).unwrap(), json);
        assert_eq!(serde_json::from_str::<Cause>(json).unwrap(), cause);
    }
}

/// The history format is what `explain` and the CLI read back: pinned.
#[test]
fn history_entry_format_is_pinned() {
    let entry = HistoryEntry {
        at_ms: 1_700_000_000_000,
        version: 3,
        from: Some(StateKind::Sending),
        to: State::Sent {
            channel: Channel::Sms,
            provider: ProviderName::new("twilio").unwrap(),
            attempt: Attempt(1),
            provider_message_id: Some("SM1".into()),
        },
        cause: Cause::Provider { provider: ProviderName::new("twilio").unwrap() },
        note: None,
    };
    let json = serde_json::to_string(&entry).unwrap();
    assert_eq!(
        json,
        r#"{"at_ms":1700000000000,"version":3,"from":"sending","to":{"Sent":{"channel":"sms","provider":"twilio","attempt":1,"provider_message_id":"SM1"}},"cause":{"kind":"provider","provider":"twilio"}}"#
    );
    assert_eq!(serde_json::from_str::<HistoryEntry>(&json).unwrap(), entry);

    let noted = HistoryEntry { note: Some("rule 7".into()), from: None, ..entry };
    let json = serde_json::to_string(&noted).unwrap();
    assert!(json.contains(r#""from":null"#) && json.ends_with(r#","note":"rule 7"}"#), "{json}");
    assert_eq!(serde_json::from_str::<HistoryEntry>(&json).unwrap(), noted);
}
