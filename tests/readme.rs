//! The README must tell the truth: its configuration example is a valid configuration.

use courant::config::Config;

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
    assert_eq!(config.providers.len(), 3);
    assert_eq!(config.policy.retry(steps::model::Channel::Sms).attempts_max, 4);
}
