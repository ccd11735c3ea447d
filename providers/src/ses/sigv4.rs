//! AWS Signature Version 4, written out from AWS's specification ("Create a signed AWS API
//! request"), for *verifying* signatures: the sandbox checks every SES request with it, and the
//! tests use it as an oracle independent of the `aws-sigv4` crate the client signs with.
//!
//! Only what a JSON POST needs: header signing (no presigned URLs), the path used as given (the
//! SES path has nothing to normalize or encode), a query sorted by its encoded pairs.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The algorithm name that starts the `Authorization` header.
pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Most signed headers accepted in one `Authorization` header.
const SIGNED_HEADERS_MAX: usize = 32;

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
/// Signature=...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization<'a> {
    /// The access key id.
    pub access_key_id: &'a str,
    /// The scope date, `YYYYMMDD`.
    pub date: &'a str,
    /// The scope region.
    pub region: &'a str,
    /// The scope service.
    pub service: &'a str,
    /// The signed header names, lowercase, sorted, as listed.
    pub signed_headers: Vec<&'a str>,
    /// The signature, 64 lowercase hex digits.
    pub signature: &'a str,
}

impl Authorization<'_> {
    /// The credential scope, `date/region/service/aws4_request`.
    pub(crate) fn scope(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date, self.region, self.service)
    }
}

/// Parses an `Authorization` header; `None` when it is not a well-formed SigV4 one.
pub(crate) fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix(ALGORITHM)?.strip_prefix(' ')?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        match key {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed = Some(value),
            "Signature" => signature = Some(value),
            _ => return None,
        }
    }
    let mut scope = credential?.split('/');
    let (access_key_id, date, region, service, terminator) =
        (scope.next()?, scope.next()?, scope.next()?, scope.next()?, scope.next()?);
    if scope.next().is_some() || terminator != "aws4_request" {
        return None;
    }
    let date_ok = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
    let signature = signature?;
    let signature_ok =
        signature.len() == 64 && signature.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let signed_headers: Vec<&str> = signed?.split(';').collect();
    let headers_ok = signed_headers.len() <= SIGNED_HEADERS_MAX
        && signed_headers
            .iter()
            .all(|h| !h.is_empty() && !h.bytes().any(|b| b.is_ascii_uppercase()))
        && signed_headers.windows(2).all(|w| w[0] < w[1]);
    if access_key_id.is_empty() || !date_ok || !signature_ok || !headers_ok {
        return None;
    }
    Some(Authorization { access_key_id, date, region, service, signed_headers, signature })
}

/// The canonical request. `header` gives a header's value by lowercase name (several values
/// joined by `,`); `None` when a signed header is missing.
pub(crate) fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    signed_headers: &[&str],
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
) -> Option<String> {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    let query: Vec<String> = pairs
        .iter()
        .map(|p| if p.contains('=') { (*p).to_owned() } else { format!("{p}=") })
        .collect();
    let mut canonical = format!("{method}\n{path}\n{}\n", query.join("&"));
    for name in signed_headers {
        let value = header(name)?;
        // Trimmed, inner runs of spaces collapsed to one.
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        canonical.push_str(&format!("{name}:{value}\n"));
    }
    canonical.push_str(&format!(
        "\n{}\n{}",
        signed_headers.join(";"),
        hex::encode(Sha256::digest(body))
    ));
    Some(canonical)
}

/// The string to sign for `canonical_request` at `amz_date` (`YYYYMMDDTHHMMSSZ`) in `scope`.
pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hash = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hash}")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The signature (lowercase hex) of `string_to_sign` with the key derived from `secret` for
/// `date`, `region` and `service`.
pub(crate) fn signature(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
    string_to_sign: &str,
) -> String {
    let key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let key = hmac(&key, region.as_bytes());
    let key = hmac(&key, service.as_bytes());
    let key = hmac(&key, b"aws4_request");
    hex::encode(hmac(&key, string_to_sign.as_bytes()))
}

/// Seconds since the Unix epoch of an `x-amz-date` (`YYYYMMDDTHHMMSSZ`), `None` if malformed.
pub(crate) fn amz_date_unix_secs(value: &str) -> Option<u64> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = value.get(range)?;
        digits.bytes().all(|d| d.is_ascii_digit()).then(|| digits.parse().ok()).flatten()
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from civil (Howard Hinnant), for dates from 1970 on.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published test vector `post-x-www-form-urlencoded` (the SigV4 test suite): a signed
    /// POST with a body.
    #[test]
    fn reproduces_aws_published_example() {
        let authorization = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b";
        let parsed = parse_authorization(authorization).expect("well-formed");
        assert_eq!(parsed.access_key_id, "AKIDEXAMPLE");
        assert_eq!(parsed.scope(), "20150830/us-east-1/service/aws4_request");
        let headers = [
            ("content-length", "13"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("host", "example.amazonaws.com"),
            (
                "x-amz-content-sha256",
                "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            ),
            ("x-amz-date", "20150830T123600Z"),
        ];
        let lookup =
            |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned());
        let canonical =
            canonical_request("POST", "/", "", &parsed.signed_headers, lookup, b"Param1=value1")
                .expect("all signed headers present");
        let to_sign = string_to_sign("20150830T123600Z", &parsed.scope(), &canonical);
        assert_eq!(
            to_sign,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             b1edd1d03544c25390e32085d55b57acc9a3961bb59415ff86c45c3d89d16cfb"
        );
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        assert_eq!(
            signature(secret, "20150830", "us-east-1", "service", &to_sign),
            parsed.signature
        );
    }

    #[test]
    fn malformed_authorization_headers_are_refused() {
        let good = "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/ses/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        assert!(parse_authorization(good).is_some());
        for bad in [
            "Bearer x",
            &good.replace("aws4_request", "aws5_request"),
            &good.replace("host;x-amz-date", "x-amz-date;host"),
            &good.replace("Signature=5fa0", "Signature=ZZa0"),
            &good.replace("20150830", "2015083"),
            &good.replace(", Signature", ", Extra=1, Signature"),
        ] {
            assert!(parse_authorization(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn amz_dates_become_unix_seconds() {
        assert_eq!(amz_date_unix_secs("19700101T000000Z"), Some(0));
        assert_eq!(amz_date_unix_secs("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(amz_date_unix_secs("20240229T235959Z"), Some(1_709_251_199));
        assert_eq!(amz_date_unix_secs("2015-08-30T12:36"), None);
        assert_eq!(amz_date_unix_secs("20151330T123600Z"), None);
    }
}
