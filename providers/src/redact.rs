//! Scrubbing provider error messages.
//!
//! Providers echo what they were sent: Twilio says "The 'To' number +15005550001 is not a valid
//! phone number.", an email API may quote the address it refused. Those messages end up in the
//! notification's history, in `explain` and in log lines, so they must not carry the recipient's
//! address (OWASP logging cheat sheet, reliability-anchors S4) nor our credentials. Scrubbing is
//! deliberately greedy: a redacted date or a long number costs nothing, a leaked phone number does.

/// What a scrubbed fragment is replaced with.
pub(crate) const REDACTED: &str = "[redacted]";

/// The shortest known literal that is scrubbed by value; shorter ones (an empty optional field)
/// would match everywhere.
const LITERAL_LEN_MIN: usize = 4;

/// The fewest digits in a run that make it look like a phone number. E.164 numbers have at least
/// 8; 7 also catches national numbers without the country code, while provider error codes (5
/// digits) survive.
const PHONE_DIGITS_MIN: usize = 7;

/// Scrubs `text`: removes every literal in `known` (ASCII case-insensitively: the recipient's
/// address, our account id), then every word that looks like an email address or a credential,
/// then every run of digits that looks like a phone number.
pub(crate) fn scrub(text: &str, known: &[&str]) -> String {
    let mut out = text.to_owned();
    for literal in known.iter().filter(|l| l.len() >= LITERAL_LEN_MIN) {
        out = replace_ignore_ascii_case(&out, literal);
    }
    let out = scrub_words(&out);
    scrub_digit_runs(&out)
}

fn replace_ignore_ascii_case(haystack: &str, needle: &str) -> String {
    // ASCII lowercasing keeps byte offsets, so positions found in the lowercase copy are valid
    // (and on char boundaries) in the original.
    let lower_haystack = haystack.to_ascii_lowercase();
    let lower_needle = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(haystack.len());
    let mut start = 0;
    while let Some(found) = lower_haystack[start..].find(&lower_needle) {
        out.push_str(&haystack[start..start + found]);
        out.push_str(REDACTED);
        start += found + needle.len();
    }
    out.push_str(&haystack[start..]);
    out
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || "'\"`,;()<>[]{}".contains(c)
}

fn looks_sensitive(word: &str) -> bool {
    // An email address; a SendGrid key (`SG.<id>.<secret>`); a Twilio SID (`AC` + 32 hex) or any
    // other long opaque token that may be a credential.
    word.contains('@')
        || (word.starts_with("SG.") && word.len() > 20)
        || (word.len() >= 32 && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

fn scrub_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if looks_sensitive(word) {
            out.push_str(REDACTED);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_separator(c) {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn scrub_digit_runs(text: &str) -> String {
    // A run is a maximal stretch of digits and the punctuation people write numbers with
    // (`+1 (555) 123-4567`); it is replaced when it holds enough digits to be a phone number.
    let in_run = |c: char| c.is_ascii_digit() || "+-(). ".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let digits = run.chars().filter(char::is_ascii_digit).count();
        if digits >= PHONE_DIGITS_MIN {
            // Keep the run's trailing punctuation (the full stop ending the sentence, the space
            // before the next word) so the message stays readable.
            let kept = run.trim_end_matches(|c: char| !c.is_ascii_digit());
            let tail = &run[kept.len()..];
            let lead_len = kept.len() - kept.trim_start_matches(' ').len();
            out.push_str(&kept[..lead_len]);
            out.push_str(REDACTED);
            out.push_str(tail);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if in_run(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_echo_of_the_number_is_removed() {
        let got = scrub("The 'To' number +15005550001 is not a valid phone number.", &[]);
        assert_eq!(got, "The 'To' number [redacted] is not a valid phone number.");
    }

    #[test]
    fn formatted_and_national_numbers_are_removed() {
        let got = scrub("call +1 (555) 123-4567 or 5551234567 now", &[]);
        assert!(!got.contains("555"), "{got}");
        assert!(got.starts_with("call [redacted]"), "{got}");
        assert!(got.ends_with(" now"), "{got}");
    }

    #[test]
    fn email_addresses_are_removed_even_when_unknown() {
        let got = scrub("Address 'Jane.Doe@Example.com' bounced", &["jane.doe@example.com"]);
        assert_eq!(got, "Address '[redacted]' bounced");
        assert_eq!(scrub("to <bob@corp.example>", &[]), "to <[redacted]>");
    }

    #[test]
    fn known_literals_are_removed_case_insensitively() {
        let got = scrub("account acdeadbeef not found", &["ACDEADBEEF"]);
        assert_eq!(got, "account [redacted] not found");
    }

    #[test]
    fn credentials_are_removed() {
        let got = scrub("bad key SG.abcdefghijklmnop.qrstuvwxyz012345", &[]);
        assert_eq!(got, "bad key [redacted]");
        let sid = format!("AC{}", "0123456789abcdef".repeat(2));
        assert_eq!(scrub(&format!("account {sid}"), &[]), "account [redacted]");
    }

    #[test]
    fn ordinary_messages_and_error_codes_survive() {
        let text = "Permission to send an SMS has not been enabled (code 21408).";
        assert_eq!(scrub(text, &[]), text);
        let text = "personalizations.0.to.0.email: Does not contain a valid address.";
        assert_eq!(scrub(text, &[]), text);
    }

    #[test]
    fn short_literals_are_ignored() {
        assert_eq!(scrub("a b c", &["", "a"]), "a b c");
    }
}
