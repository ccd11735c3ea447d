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
    assert_eq!(config.providers.len(), 5);
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
