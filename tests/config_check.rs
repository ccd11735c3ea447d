//! `courant config check` on the real binary: a valid file is summarised, a wrong one is
//! explained (which section, which field, what is wrong), and a secret's value never appears in
//! what it prints.

mod common;

use common::{courant, stderr};

const VALID: &str = r#"
[providers.sendgrid]
kind = "sendgrid"
base_url = "http://127.0.0.1:8090"
api_key = { env = "COURANT_TEST_SENDGRID_KEY" }
from = "noreply@example.com"

[providers.twilio]
kind = "twilio"
base_url = "http://127.0.0.1:8090"
account_sid = "AC00000000000000000000000000000000"
auth_token = { file = "TOKEN_FILE" }
from = "+14155550100"

[policy.routes]
email = ["sendgrid"]
sms = ["twilio"]
"#;

fn check(text: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("dir");
    let token = dir.path().join("twilio-token");
    std::fs::write(&token, "token-from-a-file-1234\n").expect("write token");
    let file = dir.path().join("courant.toml");
    let text = text.replace("TOKEN_FILE", &token.display().to_string());
    std::fs::write(&file, text).expect("write config");
    let mut command = courant();
    command.env_remove("COURANT_TEST_SENDGRID_KEY");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.args(["config", "check"]).arg(&file).output().expect("run courant");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), stdout, stderr(&output))
}

#[test]
fn a_valid_file_with_secrets_from_env_and_file_is_summarised_without_them() {
    let (ok, stdout, stderr) =
        check(VALID, &[("COURANT_TEST_SENDGRID_KEY", "SG.secret-value-from-env")]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("is valid: 2 provider(s)"), "{stdout}");
    assert!(stdout.contains("email → sendgrid") && stdout.contains("sms → twilio"), "{stdout}");
    assert!(stdout.contains("traces: not exported"), "{stdout}");
    let exported = format!("{VALID}\n[telemetry]\notlp_endpoint = \"http://collector:4318\"\n");
    let (ok, stdout, stderr) = check(&exported, &[("COURANT_TEST_SENDGRID_KEY", "SG.key")]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("traces: exported to http://collector:4318"), "{stdout}");
    for secret in ["SG.secret-value-from-env", "token-from-a-file-1234"] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} printed");
    }
}

#[test]
fn a_missing_secret_names_the_section_and_the_variable() {
    let (ok, stdout, stderr) = check(VALID, &[]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("COURANT_TEST_SENDGRID_KEY is not set"), "{stderr}");
    assert!(stderr.contains("providers"), "{stderr}");
}

#[test]
fn wrong_values_are_explained() {
    let cases = [
        // A route to a provider that does not exist.
        (VALID.replace(r#"sms = ["twilio"]"#, r#"sms = ["twillio"]"#), "twillio"),
        // A route to a provider of another channel.
        (
            VALID.replace(r#"sms = ["twilio"]"#, r#"sms = ["sendgrid"]"#),
            "names provider 'sendgrid', which serves email",
        ),
        // A misspelt field.
        (VALID.replace("from = \"+14155550100\"", "form = \"+14155550100\""), "form"),
        // A bad base URL.
        (
            VALID.replace("http://127.0.0.1:8090\"\naccount_sid", "ftp://x\"\naccount_sid"),
            "base_url",
        ),
        // Trace export to something that is not an OTLP/HTTP URL, or with credentials in it.
        (
            format!("{VALID}\n[telemetry]\notlp_endpoint = \"collector:4318\"\n"),
            "telemetry: otlp_endpoint: must be an http:// or https:// URL",
        ),
        (
            format!("{VALID}\n[telemetry]\notlp_endpoint = \"http://u:pw@collector:4318\"\n"),
            "telemetry: otlp_endpoint: must not carry credentials",
        ),
        (format!("{VALID}\n[telemetry]\nservice = \"x\"\n"), "service"),
    ];
    for (text, expected) in cases {
        let (ok, stdout, stderr) = check(&text, &[("COURANT_TEST_SENDGRID_KEY", "SG.key")]);
        assert!(!ok, "accepted: {stdout}");
        assert!(stderr.contains(expected), "expected '{expected}' in: {stderr}");
        assert!(!stderr.contains("SG.key"), "the secret was printed: {stderr}");
    }
}
