//! The README must tell the truth: its configuration example is a valid configuration.

use courant::config::Config;
use steps::model::Channel;

#[test]
fn the_readme_configuration_example_is_valid() {
    let readme = include_str!("../README.md");
    let block = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a ```toml block");
    let config: Config = toml::from_str(block).expect("the README's TOML parses as a Config");
    let config = config.finish().expect("the README's configuration validates");
    assert_eq!(config.providers.len(), 8);
    // Email goes to SendGrid (the example's explicit route); SMS fails over from Twilio to
    // Vonage; chat goes to Slack, then the signed webhook.
    let route = |channel| -> Vec<&str> {
        config.policy.route(channel).iter().map(|name| name.as_str()).collect()
    };
    assert_eq!(route(Channel::Email), ["sendgrid"]);
    assert_eq!(route(Channel::Sms), ["twilio", "vonage"]);
    assert_eq!(route(Channel::Chat), ["slack", "webhook"]);
    // The retry policies it shows are the defaults, as it says.
    let defaults = workflows::policy::Policy::default();
    let otp = steps::model::Category::new("otp").unwrap();
    for channel in [Channel::Sms, Channel::Email] {
        assert_eq!(config.policy.retry(channel), defaults.retry(channel), "{channel}");
    }
    assert_eq!(config.policy.retry_for(&otp, Channel::Sms), defaults.retry_for(&otp, Channel::Sms));
    // The template limits it shows are the defaults, as it says.
    assert_eq!(config.policy.templates, defaults.templates);
}

#[test]
fn the_readme_push_example_is_valid() {
    let readme = include_str!("../README.md");
    let block = readme
        .split("```toml\n")
        .find(|b| b.contains("kind = \"fcm\""))
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a push ```toml block");
    // The key files it names are a deployment's; the test-only ones stand in for them.
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/providers/tests/fixtures/push");
    let block = block
        .replace("/run/secrets/fcm.json", &format!("{fixtures}/fcm-service-account-test-only.json"))
        .replace("/run/secrets/AuthKey_KEY1234567.p8", &format!("{fixtures}/apns-test-only.p8"));
    let config: Config = toml::from_str(&block).expect("the README's push TOML parses as a Config");
    let config = config.finish().expect("the README's push configuration validates");
    let route: Vec<&str> = config.policy.route(Channel::Push).iter().map(|p| p.as_str()).collect();
    assert_eq!(route, ["push"]);
}
