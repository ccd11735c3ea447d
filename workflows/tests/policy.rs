//! Policy validation (`workflows::policy`): the defaults are valid, and every invalid retry, rate,
//! cap or lease value is refused with its documented error, naming the channel or the category;
//! and which windows a notification takes a slot in.

use steps::limits::{Cap, Limit, Window, WindowError};
use steps::model::{Category, Channel, ProviderName};
use steps::rate::{OverLimit, RateLimit};
use steps::retry::{PolicyError, RetryPolicy};
use workflows::policy::{CapError, CategoryPolicy, Error, Policy};

/// A valid retry policy to break one field at a time.
const RETRY: RetryPolicy = RetryPolicy {
    attempts_max: 3,
    delay_ms_base: 1_000,
    factor: 2.0,
    delay_ms_max: 10_000,
    jitter: true,
    ttl_ms: 60_000,
    schedule_ms: Vec::new(),
};

/// The default policy with `retry` for `channel`.
fn with_retry(channel: Channel, retry: RetryPolicy) -> Policy {
    let mut p = Policy::default();
    p.retry.insert(channel, retry);
    p
}

#[test]
fn defaults_are_valid() {
    let p = Policy::default();
    assert_eq!(p.validate(), Ok(()));
    assert_eq!(Policy::RETRY_DEFAULT.validate(), Ok(()));
    for retry in p.retry.values() {
        assert_eq!(retry.validate(), Ok(()));
    }
}

#[test]
fn defaults_say_what_they_promise() {
    let p = Policy::default();
    let otp = Category::new("otp").unwrap();
    let marketing = Category::new("marketing").unwrap();
    let transactional = Category::new("transactional").unwrap();
    // An OTP SMS retries within seconds and gives up within two minutes; other SMS for an hour.
    let otp_sms = p.retry_for(&otp, Channel::Sms);
    assert!(otp_sms.ttl_ms <= 120_000 && otp_sms.delay_ms_max <= 15_000, "{otp_sms:?}");
    assert!(p.retry_for(&transactional, Channel::Sms).ttl_ms <= 3_600_000);
    // Push gets two quick retries.
    let push = p.retry_for(&transactional, Channel::Push);
    assert_eq!(push.attempts_max, 3);
    assert!(push.delay_ms_max <= 10_000);
    // Transactional email retries after 1 min, 5 min, 15 min, then hourly, for hours.
    let email = p.retry_for(&transactional, Channel::Email);
    let nominal: Vec<u64> = (1..=5).map(|r| email.nominal_delay_ms(r)).collect();
    assert_eq!(nominal, [60_000, 300_000, 900_000, 3_600_000, 3_600_000]);
    assert!(email.ttl_ms >= 3_600_000);
    // Marketing waits longer than transactional email.
    let slow = p.retry_for(&marketing, Channel::Email);
    assert!(slow.nominal_delay_ms(1) > email.nominal_delay_ms(1));
    // A category without an override for a channel uses the channel's policy.
    assert_eq!(p.retry_for(&marketing, Channel::Sms), p.retry(Channel::Sms));
    // A channel without its own policy falls back to the default one.
    assert_eq!(p.retry(Channel::Chat), &Policy::RETRY_DEFAULT);
    assert_eq!(p.rate(Channel::Sms).map(|r| r.max), Some(10));
    assert_eq!(p.rate(Channel::Email).map(|r| r.max), Some(20));
    assert_eq!(p.rate(Channel::InApp), None);
    assert!(p.route(Channel::Sms).is_empty());
}

#[test]
fn invalid_retry_values_are_refused_naming_the_channel() {
    let cases: [(RetryPolicy, PolicyError); 9] = [
        (RetryPolicy { attempts_max: 0, ..RETRY }, PolicyError::Attempts),
        (RetryPolicy { attempts_max: 101, ..RETRY }, PolicyError::Attempts),
        (RetryPolicy { factor: 0.5, ..RETRY }, PolicyError::Factor),
        (RetryPolicy { factor: f32::NAN, ..RETRY }, PolicyError::Factor),
        (RetryPolicy { factor: f32::INFINITY, ..RETRY }, PolicyError::Factor),
        (RetryPolicy { delay_ms_base: 0, ..RETRY }, PolicyError::Delays),
        (RetryPolicy { delay_ms_base: 20_000, ..RETRY }, PolicyError::Delays),
        (RetryPolicy { ttl_ms: 0, ..RETRY }, PolicyError::Ttl),
        (RetryPolicy { attempts_max: 0, ttl_ms: 0, ..RETRY }, PolicyError::Attempts),
    ];
    for (retry, error) in cases {
        let p = with_retry(Channel::Push, retry);
        assert_eq!(
            p.validate(),
            Err(Error::Retry { channel: Channel::Push, error: error.clone() })
        );
    }
    // The bounds themselves are valid.
    for retry in [
        RetryPolicy { attempts_max: 1, ..RETRY },
        RetryPolicy { attempts_max: 100, ..RETRY },
        RetryPolicy { factor: 1.0, ..RETRY },
        RetryPolicy { delay_ms_base: 1, ..RETRY },
        RetryPolicy { delay_ms_base: 10_000, ..RETRY },
        RetryPolicy { ttl_ms: 1, ..RETRY },
    ] {
        assert_eq!(with_retry(Channel::Push, retry.clone()).validate(), Ok(()), "{retry:?}");
    }
}

#[test]
fn invalid_category_retry_is_refused_naming_category_and_channel() {
    let mut p = Policy::default();
    let vip = Category::new("vip").unwrap();
    p.categories
        .entry(vip.clone())
        .or_default()
        .retry
        .insert(Channel::Sms, RetryPolicy { schedule_ms: vec![1_000, 20_000], ..RETRY });
    let error = p.validate().unwrap_err();
    assert_eq!(
        error,
        Error::CategoryRetry { category: vip, channel: Channel::Sms, error: PolicyError::Schedule }
    );
    assert_eq!(
        error.to_string(),
        "retry policy for category vip on sms: schedule_ms must hold at most 100 delays, each \
         between 1 and delay_ms_max"
    );
}

#[test]
fn invalid_rate_limits_are_refused_naming_the_channel() {
    for (max, window_ms, error) in [
        (0, 1_000, WindowError::Max),
        (1, 0, WindowError::WindowMs),
        (0, 0, WindowError::Max),
        (100_001, 1_000, WindowError::Max),
        (1, 367 * 86_400_000, WindowError::WindowMs),
    ] {
        let mut p = Policy::default();
        p.rate.insert(Channel::Chat, RateLimit { max, window_ms, over_limit: OverLimit::Skip });
        let expected = Err(Error::Rate { channel: Channel::Chat, error });
        assert_eq!(p.validate(), expected, "{max}/{window_ms}");
    }
    let mut p = Policy::default();
    p.rate.insert(Channel::Chat, RateLimit { max: 1, window_ms: 1, over_limit: OverLimit::Defer });
    assert_eq!(p.validate(), Ok(()));
}

#[test]
fn send_lease_must_be_between_one_second_and_ten_minutes() {
    for (lease, ok) in
        [(0, false), (999, false), (1_000, true), (30_000, true), (600_000, true), (600_001, false)]
    {
        let p = Policy { send_lease_ms: lease, ..Policy::default() };
        let expected = if ok { Ok(()) } else { Err(Error::Lease) };
        assert_eq!(p.validate(), expected, "send_lease_ms = {lease}");
    }
}

#[test]
fn errors_read_as_documented() {
    let retry = Error::Retry { channel: Channel::Sms, error: PolicyError::Attempts };
    assert_eq!(retry.to_string(), "retry policy for sms: attempts_max must be between 1 and 100");
    let retry = Error::Retry { channel: Channel::Email, error: PolicyError::Delays };
    assert_eq!(
        retry.to_string(),
        "retry policy for email: delay_ms_base must be >= 1 and <= delay_ms_max"
    );
    assert_eq!(
        Error::Rate { channel: Channel::InApp, error: WindowError::Max }.to_string(),
        "rate limit for in_app: max must be between 1 and 100000"
    );
    assert_eq!(Error::Lease.to_string(), "send_lease_ms must be between 1000 and 600000");
}

#[test]
fn policy_is_serde_data() {
    let mut p = Policy::default();
    p.routes.insert(Channel::Sms, vec![ProviderName::new("twilio").unwrap()]);
    let json = serde_json::to_string(&p).unwrap();
    let back: Policy = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    // Channels are map keys by their wire names.
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["routes"]["sms"], serde_json::json!(["twilio"]));
    assert_eq!(value["retry"]["sms"]["attempts_max"], 5);
    assert_eq!(value["categories"]["otp"]["retry"]["sms"]["ttl_ms"], 120_000);

    // Unknown fields are refused (a typo must not silently fall back to a default).
    let err = serde_json::from_str::<Policy>(r#"{"send_lease": 5000}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `send_lease`"), "{err}");
    let err = serde_json::from_str::<Policy>(
        r#"{"retry": {"sms": {"attempts_max": 3, "delay_ms_base": 1, "factor": 2.0,
            "delay_ms_max": 10, "jitter": false, "ttl_ms": 5, "tries": 1}}}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `tries`"), "{err}");
    // Unknown channels too.
    assert!(serde_json::from_str::<Policy>(r#"{"routes": {"fax": []}}"#).is_err());

    // Missing fields take the defaults.
    let empty: Policy = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, Policy::default());
    let lease: Policy = serde_json::from_str(r#"{"send_lease_ms": 5000}"#).unwrap();
    assert_eq!(lease, Policy { send_lease_ms: 5_000, ..Policy::default() });
}

fn category(name: &str) -> Category {
    Category::new(name).unwrap()
}

#[test]
fn marketing_is_capped_by_default_and_critical_categories_take_no_window() {
    let p = Policy::default();
    let marketing = category("marketing");
    let day = 86_400_000;
    assert_eq!(
        p.caps(&marketing),
        &[
            Cap { max: 1, window_ms: day, over_limit: OverLimit::Defer },
            Cap { max: 5, window_ms: 7 * day, over_limit: OverLimit::Defer },
        ]
    );
    // Marketing email: the email window and both caps, all or nothing.
    let windows = p.windows(&marketing, Channel::Email);
    let limits: Vec<String> = windows.iter().map(|w| w.limit.to_string()).collect();
    assert_eq!(
        limits,
        [
            "the email rate limit (20 per 1 h)",
            "the marketing cap (1 per 24 h)",
            "the marketing cap (5 per 168 h)"
        ]
    );
    // An uncapped category on a channel without a rate limit takes no window.
    assert_eq!(p.windows(&category("orders"), Channel::InApp), vec![]);
    assert_eq!(
        p.windows(&category("orders"), Channel::Sms),
        vec![Window {
            limit: Limit::Channel { channel: Channel::Sms, max: 10, window_ms: 3_600_000 },
            over_limit: OverLimit::Defer
        }]
    );
    // Critical categories are exempt from every per-recipient window, even with caps set.
    let mut p = Policy::default();
    let otp = category("otp");
    p.categories.get_mut(&otp).unwrap().caps =
        Some(vec![Cap { max: 1, window_ms: 1_000, over_limit: OverLimit::Skip }]);
    assert!(p.is_critical(&otp));
    assert_eq!(p.windows(&otp, Channel::Sms), vec![]);
    assert_eq!(p.validate(), Ok(()));
}

#[test]
fn invalid_caps_are_refused_naming_the_category_and_the_cap() {
    let cap = |max, window_ms| Cap { max, window_ms, over_limit: OverLimit::Defer };
    let with = |caps: Vec<Cap>| {
        let mut p = Policy::default();
        p.categories.insert(
            category("news"),
            CategoryPolicy { caps: Some(caps), ..CategoryPolicy::default() },
        );
        p.validate()
    };
    assert_eq!(with(vec![cap(1, 1_000), cap(3, 60_000)]), Ok(()));
    assert_eq!(with(vec![]), Ok(()));
    let error = with(vec![cap(1, 1_000), cap(0, 60_000)]).unwrap_err();
    assert_eq!(
        error,
        Error::Cap {
            category: category("news"),
            index: Some(1),
            error: CapError::Window(WindowError::Max)
        }
    );
    assert_eq!(error.to_string(), "categories.news.caps[1]: max must be between 1 and 100000");
    let error = with(vec![cap(1, 1_000), cap(2, 1_000)]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "categories.news.caps[1]: two caps have the same window_ms; merge them (the smaller max \
         wins)"
    );
    let error = with(vec![cap(1, 0)]).unwrap_err();
    assert!(error.to_string().contains("caps[0]: window_ms must be between 1 and"), "{error}");
    let error = with((1..=9).map(|i| cap(1, i * 1_000)).collect()).unwrap_err();
    assert_eq!(error.to_string(), "categories.news.caps: at most 8 caps per category");
}

#[test]
fn dedup_and_collapse_windows_are_checked_and_read_per_category() {
    let mut p = Policy::default();
    let orders = category("orders");
    assert_eq!(p.dedup_window_ms_for(&orders), 86_400_000, "24 h by default");
    assert_eq!(p.collapse_window_ms(&orders), None, "nothing collapses by default");
    p.categories.insert(
        category("chat"),
        CategoryPolicy {
            dedup_window_ms: Some(0),
            collapse_window_ms: Some(30_000),
            ..CategoryPolicy::default()
        },
    );
    assert_eq!(p.validate(), Ok(()));
    assert_eq!(p.dedup_window_ms_for(&category("chat")), 0);
    assert_eq!(p.collapse_window_ms(&category("chat")), Some(30_000));
    let too_long = Policy { dedup_window_ms: 31 * 86_400_000, ..Policy::default() };
    let error = too_long.validate().unwrap_err();
    assert_eq!(error, Error::DedupWindow { category: None });
    assert_eq!(error.to_string(), "dedup_window_ms must be at most 2592000000 (30 days)");
    for bad in [0, 3_600_001] {
        let mut p = Policy::default();
        p.categories.insert(
            category("chat"),
            CategoryPolicy { collapse_window_ms: Some(bad), ..CategoryPolicy::default() },
        );
        let error = p.validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            "categories.chat.collapse_window_ms must be between 1 and 3600000 (an hour)",
            "{bad}"
        );
    }
    let mut p = Policy::default();
    p.categories.insert(
        category("chat"),
        CategoryPolicy { dedup_window_ms: Some(31 * 86_400_000), ..CategoryPolicy::default() },
    );
    assert_eq!(
        p.validate().unwrap_err().to_string(),
        "categories.chat.dedup_window_ms must be at most 2592000000 (30 days)"
    );
}
