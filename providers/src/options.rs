//! Checks and defaults shared by the HTTP providers' configs.

use crate::Error;

/// Default deadline of one provider call, connect to last byte, in ms.
///
/// Why 10 s: SendGrid and Twilio accept a message in well under a second when healthy, so 10 s
/// rides out a slow moment without letting one stuck call hold a worker for long. It also stays
/// far below the lifecycle's send lease (`send_lease_ms`, 30 s by default), so the lease wake-up
/// never fires while a call is still in flight. A call that hits it is an unknown outcome and is
/// reconciled, so a shorter deadline does not lose messages, it only creates more reconciling.
pub const TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Default deadline for establishing a connection (DNS, TCP, TLS), in ms. A healthy provider
/// connects in tens of ms; 3 s leaves room for a cold TLS handshake on a slow link, and a connect
/// failure is retryable (nothing was written), so failing it early is cheap.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 3_000;

/// Shortest accepted call deadline, in ms. Below it even a healthy provider would time out.
pub const TIMEOUT_MS_MIN: u64 = 100;

/// Longest accepted call deadline, in ms. It must stay below the lifecycle's send lease, whose
/// smallest allowed value is 1 s and default 30 s; a minute is the outer bound for any sane
/// configuration and the start-up check should compare it with the configured lease.
pub const TIMEOUT_MS_MAX: u64 = 60_000;

/// Longest accepted base URL, in bytes.
pub const BASE_URL_BYTES_MAX: usize = 2_048;

pub(crate) fn timeout_ms_default() -> u64 {
    TIMEOUT_MS_DEFAULT
}

pub(crate) fn connect_timeout_ms_default() -> u64 {
    CONNECT_TIMEOUT_MS_DEFAULT
}

/// Checks a base URL (`http(s)://host[:port][/prefix]`) and returns it without a trailing `/`.
pub(crate) fn base_url(provider: &str, field: &'static str, value: &str) -> Result<String, Error> {
    let bad = |reason: &str| Err(Error::config(provider, field, reason));
    if value.len() > BASE_URL_BYTES_MAX {
        return bad("is too long");
    }
    let Some(rest) = value.strip_prefix("https://").or_else(|| value.strip_prefix("http://"))
    else {
        return bad("must start with https:// (or http:// for a local sandbox)");
    };
    if rest.is_empty() || rest.starts_with('/') {
        return bad("must name a host");
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control() || "?#@".contains(c)) {
        return bad("must not contain whitespace, a query, a fragment or credentials");
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// Checks the call and connect deadlines.
pub(crate) fn timeouts(
    provider: &str,
    timeout_ms: u64,
    connect_timeout_ms: u64,
) -> Result<(), Error> {
    if !(TIMEOUT_MS_MIN..=TIMEOUT_MS_MAX).contains(&timeout_ms) {
        return Err(Error::config(
            provider,
            "timeout_ms",
            format!("must be between {TIMEOUT_MS_MIN} and {TIMEOUT_MS_MAX}"),
        ));
    }
    if connect_timeout_ms == 0 || connect_timeout_ms > timeout_ms {
        // A connect deadline beyond the call deadline would turn connect failures (retryable)
        // into call timeouts (unknown), which forces a needless reconcile.
        return Err(Error::config(
            provider,
            "connect_timeout_ms",
            "must be at least 1 and at most timeout_ms",
        ));
    }
    Ok(())
}

/// Checks a free-text value that ends up in a header or a form field: bounded, one line.
pub(crate) fn one_line(
    provider: &str,
    field: &'static str,
    value: &str,
    chars_max: usize,
) -> Result<(), Error> {
    if value.is_empty() || value.chars().count() > chars_max {
        return Err(Error::config(provider, field, format!("must be 1 to {chars_max} characters")));
    }
    if value.chars().any(char::is_control) {
        // CR/LF in a sender name is header injection (reliability-anchors S3).
        return Err(Error::config(provider, field, "must not contain control characters"));
    }
    Ok(())
}

/// Checks a Twilio-style SID: a two-letter prefix then 32 hex digits.
pub(crate) fn sid(
    provider: &str,
    field: &'static str,
    value: &str,
    prefix: &str,
) -> Result<(), Error> {
    let ok = value.len() == 34
        && value.starts_with(prefix)
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(Error::config(provider, field, format!("must be {prefix} followed by 32 hex digits")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        assert_eq!(
            base_url("p", "base_url", "https://api.example.com/").ok(),
            Some("https://api.example.com".into())
        );
        assert_eq!(
            base_url("p", "base_url", "http://127.0.0.1:8025").ok(),
            Some("http://127.0.0.1:8025".into())
        );
        for bad in [
            "api.example.com",
            "ftp://x",
            "https://",
            "https://a b",
            "https://u:p@host",
            "https://h/?q=1",
        ] {
            assert!(base_url("p", "base_url", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_are_bounded() {
        assert!(timeouts("p", 10_000, 3_000).is_ok());
        assert!(timeouts("p", 50, 10).is_err());
        assert!(timeouts("p", 120_000, 3_000).is_err());
        assert!(timeouts("p", 1_000, 2_000).is_err());
        assert!(timeouts("p", 1_000, 0).is_err());
    }

    #[test]
    fn sids_have_a_prefix_and_32_hex_digits() {
        let good = format!("AC{}", "0a".repeat(16));
        assert!(sid("p", "account_sid", &good, "AC").is_ok());
        assert!(sid("p", "account_sid", &good.replace("AC", "MG"), "AC").is_err());
        assert!(sid("p", "account_sid", "AC123", "AC").is_err());
        assert!(sid("p", "account_sid", &format!("AC{}", "zz".repeat(16)), "AC").is_err());
    }

    #[test]
    fn one_line_rejects_header_injection() {
        assert!(one_line("p", "from_name", "Acme", 100).is_ok());
        assert!(one_line("p", "from_name", "Acme\r\nBcc: x", 100).is_err());
        assert!(one_line("p", "from_name", "", 100).is_err());
    }
}
