//! End to end: the second SMS provider and the chat channel, through the real binary, Redis and
//! the sandbox. Twilio refuses our credentials, so the SMS goes out through Vonage; Slack refuses
//! its token, so the chat message goes out through the signed webhook, whose signature the
//! sandbox verifies.

mod common;

use std::time::Duration;

use common::{Stack, stderr};

const CONFIG: &str = r#"
[providers.twilio_revoked]
kind = "twilio"
base_url = "{sandbox_url}"
account_sid = "AC00000000000000000000000000000000"
auth_token = "revoked-token"
from = "+15005550006"
timeout_ms = 5000

[providers.vonage]
kind = "vonage"
base_url = "{sandbox_url}"
api_key = "sandbox1"
api_secret = "sandbox-vonage-secret"
from = "courant"
timeout_ms = 5000

[providers.slack]
kind = "slack"
webhook_url = "{sandbox_url}/services/T00000000/B00000000/revoked-token"
timeout_ms = 5000

[providers.webhook]
kind = "webhook"
url = "{sandbox_url}/sandbox/webhook"
secret = "whsec_Y291cmFudC1zYW5kYm94LXdlYmhvb2stc2VjcmV0ISE="
timeout_ms = 5000

[policy.routes]
sms = ["twilio_revoked", "vonage"]
chat = ["slack", "webhook"]
"#;

#[test]
fn refused_credentials_fail_sms_over_to_vonage_and_chat_over_to_the_signed_webhook() {
    let stack = Stack::start(CONFIG);
    let _serve = stack.serve("all", "e2e-sms-chat");

    let sms = stack.send("sms", "otp", r#"{"code":"481516","product":"courant"}"#);
    let view = stack.wait_state(&sms, Duration::from_secs(20), |s| s == "sent");
    assert_eq!(
        (view["channel"].as_str(), view["provider"].as_str()),
        (Some("sms"), Some("vonage"))
    );

    let chat = stack.send("chat", "order_shipped", r#"{"name":"Ada","order_id":"A-1"}"#);
    let view = stack.wait_state(&chat, Duration::from_secs(20), |s| s == "delivered");
    assert_eq!(view["provider"], "webhook", "{view}");

    let stats = stack.sandbox_stats();
    assert_eq!(stats["twilio"]["failed"]["unauthorized"], 1, "{stats}");
    assert_eq!(stats["twilio"]["accepted"], 0, "{stats}");
    assert_eq!(stats["vonage"]["accepted"], 1, "{stats}");
    assert_eq!(stats["slack"]["failed"]["unauthorized"], 1, "{stats}");
    assert_eq!(stats["webhook"]["accepted"], 1, "{stats}");
    assert_eq!(stats["webhook"]["failed"]["unauthorized"], 0, "the signature verified: {stats}");

    // What Vonage got: the number without `+`, our id as client-ref.
    let vonage = stack.sandbox_messages("vonage");
    assert_eq!(vonage.len(), 1);
    assert_eq!(vonage[0]["to"], "14155550123");
    assert_eq!(vonage[0]["notification_id"].as_str(), Some(sms.as_str()));
    assert!(vonage[0]["request"]["text"].as_str().unwrap_or_default().contains("481516"));

    // What the webhook receiver got: the rendered text and who it is for.
    let hooks = stack.sandbox_messages("webhook");
    assert_eq!(hooks.len(), 1);
    let data = &hooks[0]["request"]["data"];
    assert_eq!(data["notification_id"].as_str(), Some(chat.as_str()));
    assert_eq!(data["tenant"], "acme");
    assert_eq!(data["recipient_id"], "ada");
    assert_eq!(data["text"], "Order A-1 for Ada has shipped.");
    assert_eq!(hooks[0]["message_id"].as_str(), Some(chat.as_str()), "webhook-id is our id");

    // The history says why the first provider was left.
    let output = stack.cli(&["history", &sms]);
    assert!(output.status.success(), "{}", stderr(&output));
    let table = String::from_utf8(output.stdout).expect("utf8");
    assert!(table.contains("twilio_revoked") && table.contains("vonage"), "{table}");
}
