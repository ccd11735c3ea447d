//! The fake `POST /v2/email/outbound-emails` (Amazon SES v2 SendEmail).
//!
//! Every request's SigV4 signature is verified over the raw body with the sandbox's credentials
//! (`crate::ses::sigv4`, written from AWS's specification, independently of the `aws-sigv4` crate
//! the client signs with), so a signing bug shows up as SES's own 403. Errors come in SES's shape:
//! the type in `x-amzn-ErrorType`, `{"message"}` in the body. A valid body is answered `200
//! {"MessageId"}` and kept, with its `EmailTags`, for `GET /sandbox/messages?provider=ses` and
//! for receipts made from it later ([`ses_tags`]).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use steps::model::EmailAddress;
use subtle::ConstantTimeEq;

use super::{Counted, Fault, Sandbox, SandboxMessage, SandboxProvider, now_ms};
use crate::ses::sigv4;

const PROVIDER: SandboxProvider = SandboxProvider::Ses;

/// How far `x-amz-date` may be from the sandbox's clock, in seconds: AWS's 15 minutes.
const CLOCK_SKEW_SECS_MAX: u64 = 15 * 60;

/// SES's cap on recipients per message (To, Cc and Bcc together).
const RECIPIENTS_MAX: usize = 50;

/// SES's cap on tags per message.
const TAGS_MAX: usize = 50;

/// SES's cap on a tag name or value, in characters.
const TAG_CHARS_MAX: usize = 256;

/// The namespace SES puts after the error type of its own errors.
const SES_NAMESPACE: &str = "http://internal.amazon.com/coral/com.amazonaws.sesv2/";

/// The namespace of the errors AWS's front end answers before SES sees the request (auth).
const CORAL_NAMESPACE: &str = "http://internal.amazon.com/coral/com.amazon.coral.service/";

/// An error answer in SES's shape.
fn error(status: StatusCode, kind: &str, namespace: &str, message: &str) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "message": message }).to_string(),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("{kind}:{namespace}")) {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    response
}

fn forbidden(kind: &str, message: &str) -> Response {
    error(StatusCode::FORBIDDEN, kind, CORAL_NAMESPACE, message)
}

/// A 403 from the signature check.
fn deny(kind: &str, message: &str) -> Result<(), Box<Response>> {
    Err(Box::new(forbidden(kind, message)))
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "BadRequestException", SES_NAMESPACE, message)
}

pub(super) async fn send_email(
    State(sandbox): State<Sandbox>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (delay, fault) = sandbox.admit(PROVIDER);
    tokio::time::sleep(delay).await;

    if let Err(response) = verify_signature(&sandbox, &uri, &headers, &body) {
        sandbox.count(PROVIDER, Counted::Unauthorized);
        return *response;
    }
    let request = match serde_json::from_slice::<Value>(&body) {
        Ok(request) if request.is_object() => request,
        _ => {
            sandbox.count(PROVIDER, Counted::Invalid);
            return error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                CORAL_NAMESPACE,
                "Unable to parse the request body as JSON.",
            );
        }
    };
    if let Err(message) = validate(&request) {
        sandbox.count(PROVIDER, Counted::Invalid);
        return bad_request(&message);
    }

    match fault {
        Some(Fault::ServerError(status)) => {
            sandbox.count(PROVIDER, Counted::ServerError);
            return if status == 503 {
                error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", CORAL_NAMESPACE, "")
            } else {
                error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", CORAL_NAMESPACE, "")
            };
        }
        Some(Fault::RateLimited(retry_after_secs)) => {
            sandbox.count(PROVIDER, Counted::RateLimited);
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                SES_NAMESPACE,
                "Maximum sending rate exceeded.",
            );
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return response;
        }
        Some(Fault::Hang(duration)) => {
            let id = take(&sandbox, request, false);
            sandbox.count(PROVIDER, Counted::Hung);
            sandbox.hang(duration).await;
            return accepted(&id);
        }
        None => {}
    }
    let plan = sandbox.plan_receipts(PROVIDER);
    let published = plan.map(|plan| (plan, request.clone()));
    let id = take(&sandbox, request, true);
    sandbox.count(PROVIDER, Counted::Accepted);
    if let Some((plan, request)) = published {
        sandbox.send_ses_receipts(plan, &id, &request);
    }
    accepted(&id)
}

/// Checks the SigV4 `Authorization` header against the sandbox's credentials, region and clock;
/// the error is SES's answer.
fn verify_signature(
    sandbox: &Sandbox,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Box<Response>> {
    let shared = &sandbox.shared;
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return deny("MissingAuthenticationTokenException", "Missing Authentication Token");
    };
    let Some(authorization) = value.to_str().ok().and_then(sigv4::parse_authorization) else {
        return deny(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters.",
        );
    };
    let key_ok = authorization.access_key_id.as_bytes().ct_eq(shared.ses_access_key_id.as_bytes());
    if !bool::from(key_ok) {
        return deny(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        );
    }
    let signed = &authorization.signed_headers;
    if !signed.contains(&"host") || !signed.contains(&"x-amz-date") {
        return deny(
            "InvalidSignatureException",
            "'Host' and 'X-Amz-Date' must be signed headers.",
        );
    }
    if headers.contains_key("x-amz-security-token") && !signed.contains(&"x-amz-security-token") {
        return deny(
            "InvalidSignatureException",
            "'X-Amz-Security-Token' must be a signed header.",
        );
    }
    if authorization.service != crate::ses::SIGNING_SERVICE {
        return deny(
            "InvalidSignatureException",
            "Credential should be scoped to correct service: 'ses'.",
        );
    }
    if authorization.region != shared.ses_region {
        return deny(
            "InvalidSignatureException",
            &format!(
                "Credential should be scoped to a valid region, not '{}'.",
                authorization.region
            ),
        );
    }
    let amz_date = headers.get("x-amz-date").and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(signed_at) = sigv4::amz_date_unix_secs(amz_date) else {
        return deny(
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        );
    };
    if !amz_date.starts_with(authorization.date) {
        return deny(
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.",
        );
    }
    let now = now_ms() / 1_000;
    if now.abs_diff(signed_at) > CLOCK_SKEW_SECS_MAX {
        return deny(
            "InvalidSignatureException",
            &format!(
                "Signature expired: {amz_date} is not within 15 minutes of the server's time."
            ),
        );
    }
    let lookup = |name: &str| {
        let values: Vec<&str> =
            headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let expected = sigv4::canonical_request(
        "POST",
        uri.path(),
        uri.query().unwrap_or(""),
        signed,
        lookup,
        body,
    )
    .map(|canonical| {
        let to_sign = sigv4::string_to_sign(amz_date, &authorization.scope(), &canonical);
        sigv4::signature(
            shared.ses_secret_key.expose(),
            authorization.date,
            authorization.region,
            authorization.service,
            &to_sign,
        )
    });
    let matches = expected.is_some_and(|expected| {
        bool::from(expected.as_bytes().ct_eq(authorization.signature.as_bytes()))
    });
    if !matches {
        return deny(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check \
             your AWS Secret Access Key and signing method. Consult the service documentation for \
             details.",
        );
    }
    Ok(())
}

/// The address in a `FromEmailAddress`/`ToAddresses` value: bare, or in `Name <address>`.
fn address_of(value: &str) -> Option<&str> {
    match value.rfind('<') {
        Some(start) => value[start + 1..].strip_suffix('>'),
        None => Some(value),
    }
}

fn is_address(value: &Value) -> bool {
    value.as_str().and_then(address_of).is_some_and(|address| EmailAddress::parse(address).is_ok())
}

fn is_tag_text(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        !s.is_empty()
            && s.chars().count() <= TAG_CHARS_MAX
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

fn is_text(value: &Value) -> bool {
    value.get("Data").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
        && value.get("Charset").is_none_or(Value::is_string)
}

/// SES's checks on the fields courant sends, in SES's words where it has them.
pub(super) fn validate(request: &Value) -> Result<(), String> {
    match request.get("FromEmailAddress") {
        None => return Err("Missing required field 'FromEmailAddress'.".into()),
        Some(from) if !is_address(from) => return Err("Missing final '@domain'".into()),
        Some(_) => {}
    }
    let destination = &request["Destination"];
    let lists = ["ToAddresses", "CcAddresses", "BccAddresses"];
    let mut recipients = 0;
    for list in lists {
        let Some(addresses) = destination.get(list) else { continue };
        let Some(addresses) = addresses.as_array() else {
            return Err(format!("Destination.{list} must be a list."));
        };
        if addresses.iter().any(|a| !is_address(a)) {
            return Err("Illegal address".into());
        }
        recipients += addresses.len();
    }
    if recipients == 0 {
        return Err("Missing required field 'Destination'.".into());
    }
    if recipients > RECIPIENTS_MAX {
        return Err("Recipient count exceeds 50.".into());
    }
    let simple = &request["Content"]["Simple"];
    if !request["Content"].is_object() {
        return Err("Missing required field 'Content'.".into());
    }
    if !simple.is_object() {
        return Err("Either Simple, Raw or Template content must be specified.".into());
    }
    if !is_text(&simple["Subject"]) {
        return Err("Missing required field 'Subject'.".into());
    }
    let body = &simple["Body"];
    let parts: Vec<&Value> = ["Text", "Html"].iter().filter_map(|p| body.get(*p)).collect();
    if parts.is_empty() || !parts.iter().all(|p| is_text(p)) {
        return Err("Missing required field 'Body': a Text or Html part with Data.".into());
    }
    if let Some(tags) = request.get("EmailTags") {
        let Some(tags) = tags.as_array().filter(|t| t.len() <= TAGS_MAX) else {
            return Err("EmailTags must be a list of at most 50 tags.".into());
        };
        if !tags.iter().all(|t| is_tag_text(&t["Name"]) && is_tag_text(&t["Value"])) {
            return Err("Invalid tag name or value: only ASCII letters, numbers, underscores and \
                        dashes, at most 256 characters."
                .into());
        }
    }
    if request.get("ConfigurationSetName").is_some_and(|set| !is_tag_text(set)) {
        return Err("Invalid configuration set name.".into());
    }
    Ok(())
}

/// Records the message and returns its id.
fn take(sandbox: &Sandbox, request: Value, answered: bool) -> String {
    let id = sandbox.ses_message_id();
    let to = request["Destination"]["ToAddresses"][0]
        .as_str()
        .and_then(address_of)
        .unwrap_or_default()
        .to_owned();
    let message = SandboxMessage {
        message_id: id.clone(),
        received_at_ms: now_ms(),
        to,
        notification_id: None,
        answered,
        request,
    };
    let notification_id = ses_tags(&message)
        .get(crate::ses::TAG_NOTIFICATION_ID)
        .and_then(|values| values.first().cloned());
    sandbox.record(PROVIDER, SandboxMessage { notification_id, ..message });
    id
}

fn accepted(id: &str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "MessageId": id }).to_string(),
    )
        .into_response()
}

/// The `EmailTags` of a message the fake SES took, as SES puts them in the `mail.tags` of the
/// events it publishes: each name with its values.
pub fn ses_tags(message: &SandboxMessage) -> BTreeMap<String, Vec<String>> {
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for tag in message.request["EmailTags"].as_array().into_iter().flatten() {
        if let (Some(name), Some(value)) = (tag["Name"].as_str(), tag["Value"].as_str()) {
            tags.entry(name.to_owned()).or_default().push(value.to_owned());
        }
    }
    tags
}

impl Sandbox {
    /// An SES-style message id: 16 hex digits, a UUID, then `-000000`.
    fn ses_message_id(&self) -> String {
        use rand::RngExt as _;
        let mut inner = self.lock();
        let (a, b, c): (u64, u64, u64) =
            (inner.rng.random(), inner.rng.random(), inner.rng.random());
        format!(
            "{a:016x}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}-000000",
            b >> 32,
            (b >> 16) & 0xffff,
            b & 0xffff,
            c >> 48,
            c & 0xffff_ffff_ffff,
        )
    }
}

/// An SES provider config pointing at a sandbox on `base_url` with its default credentials, for
/// `courant dev`: sends from `courant@dev.example` with the configuration set `courant-dev`.
pub fn dev_ses_config(base_url: &str) -> crate::ses::SesConfig {
    crate::ses::SesConfig {
        base_url: base_url.to_owned(),
        region: super::SES_REGION_DEFAULT.to_owned(),
        access_key_id: crate::Secret::new(super::SES_ACCESS_KEY_ID_DEFAULT)
            .unwrap_or_else(|_| unreachable!("a valid constant")),
        secret_access_key: super::config::ses_secret_key_default(),
        session_token: None,
        from: EmailAddress::parse("courant@dev.example")
            .unwrap_or_else(|_| unreachable!("a valid constant")),
        from_name: Some("courant dev".to_owned()),
        configuration_set: Some("courant-dev".to_owned()),
        timeout_ms: crate::options::TIMEOUT_MS_DEFAULT,
        connect_timeout_ms: crate::options::CONNECT_TIMEOUT_MS_DEFAULT,
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::super::{Behaviour, SandboxConfig, serve_with};
    use super::*;

    const BODY: &str = r#"{"FromEmailAddress":"noreply@shop.example","Destination":{"ToAddresses":["jane.doe@example.org"]},"Content":{"Simple":{"Subject":{"Data":"Hi","Charset":"UTF-8"},"Body":{"Text":{"Data":"Hi","Charset":"UTF-8"}}}},"EmailTags":[{"Name":"notification_id","Value":"n_1"},{"Name":"tenant","Value":"acme"},{"Name":"attempt","Value":"1"}],"ConfigurationSetName":"courant-dev"}"#;

    async fn start(behaviour: Behaviour) -> (String, Sandbox) {
        let mut config = SandboxConfig { seed: Some(7), ..SandboxConfig::default() };
        config.ses.behaviour = behaviour;
        let sandbox = Sandbox::new(config).expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(serve_with(listener, sandbox.clone(), std::future::pending()));
        (base, sandbox)
    }

    fn quiet() -> Behaviour {
        Behaviour { latency_ms: 0, ..Behaviour::default() }
    }

    /// An `x-amz-date` for `unix_secs`.
    fn amz_date(unix_secs: u64) -> String {
        let date = super::super::rfc2822(unix_secs);
        // "Thu, 24 Aug 2023 05:01:45 +0000" -> "20230824T050145Z"
        let parts: Vec<&str> = date.split([' ', ':', ',']).filter(|p| !p.is_empty()).collect();
        const MONTHS: [&str; 12] =
            ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let month = MONTHS.iter().position(|m| *m == parts[2]).expect("month") + 1;
        format!("{}{month:02}{}T{}{}{}Z", parts[3], parts[1], parts[4], parts[5], parts[6])
    }

    /// Posts `body` signed (by `sigv4`) for `signed_body`, with `key_id`/`secret` at `unix_secs`.
    async fn post_signed(
        base: &str,
        body: &str,
        signed_body: &str,
        key_id: &str,
        secret: &str,
        unix_secs: u64,
    ) -> reqwest::Response {
        let host = base.trim_start_matches("http://").to_owned();
        let date = amz_date(unix_secs);
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("host", host),
            ("x-amz-date", date.clone()),
        ];
        let signed = ["content-type", "host", "x-amz-date"];
        let lookup = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        let canonical = sigv4::canonical_request(
            "POST",
            crate::ses::SEND_EMAIL_PATH,
            "",
            &signed,
            lookup,
            signed_body.as_bytes(),
        )
        .expect("headers");
        let scope = format!("{}/us-east-1/ses/aws4_request", &date[..8]);
        let to_sign = sigv4::string_to_sign(&date, &scope, &canonical);
        let signature = sigv4::signature(secret, &date[..8], "us-east-1", "ses", &to_sign);
        reqwest::Client::new()
            .post(format!("{base}{}", crate::ses::SEND_EMAIL_PATH))
            .header("content-type", "application/json")
            .header("x-amz-date", date)
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={key_id}/{scope}, \
                     SignedHeaders=content-type;host;x-amz-date, Signature={signature}"
                ),
            )
            .body(body.to_owned())
            .send()
            .await
            .expect("sent")
    }

    async fn error_of(response: reqwest::Response) -> (u16, String, String) {
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value = response.json().await.expect("json");
        (status, kind, body["message"].as_str().unwrap_or("").to_owned())
    }

    fn now() -> u64 {
        now_ms() / 1_000
    }

    const KEY: &str = super::super::SES_ACCESS_KEY_ID_DEFAULT;
    const SECRET: &str = super::super::SES_SECRET_KEY_DEFAULT;

    #[tokio::test]
    async fn a_correctly_signed_request_is_accepted_and_kept_with_its_tags() {
        let (base, sandbox) = start(quiet()).await;
        let response = post_signed(&base, BODY, BODY, KEY, SECRET, now()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        let answer: Value = response.json().await.expect("json");
        let id = answer["MessageId"].as_str().expect("id").to_owned();
        assert_eq!(id.len(), 60, "{id}");
        assert!(id.ends_with("-000000"), "{id}");
        let kept = sandbox.messages(SandboxProvider::Ses);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].message_id, id);
        assert_eq!(kept[0].to, "jane.doe@example.org");
        assert_eq!(kept[0].notification_id.as_deref(), Some("n_1"));
        let tags = ses_tags(&kept[0]);
        assert_eq!(tags["notification_id"], ["n_1"]);
        assert_eq!(tags["tenant"], ["acme"]);
        assert_eq!(tags["attempt"], ["1"]);
        let listed: Value = reqwest::get(format!("{base}/sandbox/messages?provider=ses"))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(listed[0]["message_id"], id.as_str());
        let stats = sandbox.stats();
        assert_eq!((stats.ses.received, stats.ses.accepted), (1, 1));
        assert_eq!(stats.sendgrid.received, 0);
    }

    #[tokio::test]
    async fn bad_credentials_and_signatures_get_ses_403s() {
        let (base, sandbox) = start(quiet()).await;
        let cases = [
            (
                post_signed(&base, BODY, BODY, "AKIAOTHERKEY00000000", SECRET, now()).await,
                "UnrecognizedClientException",
            ),
            (
                post_signed(&base, BODY, BODY, KEY, "another-secret", now()).await,
                "InvalidSignatureException",
            ),
            // The body changed after signing: the signature covers the raw bytes.
            (
                post_signed(&base, &BODY.replace("Hi", "Ho"), BODY, KEY, SECRET, now()).await,
                "InvalidSignatureException",
            ),
            // Signed 20 minutes ago.
            (
                post_signed(&base, BODY, BODY, KEY, SECRET, now() - 1_200).await,
                "InvalidSignatureException",
            ),
        ];
        for (response, kind) in cases {
            let (status, header, message) = error_of(response).await;
            assert_eq!(status, 403, "{kind}: {message}");
            assert_eq!(header, format!("{kind}:{CORAL_NAMESPACE}"));
            assert!(!message.is_empty());
        }
        let response = reqwest::Client::new()
            .post(format!("{base}{}", crate::ses::SEND_EMAIL_PATH))
            .body(BODY)
            .send()
            .await
            .expect("sent");
        let (status, header, _) = error_of(response).await;
        assert_eq!(status, 403);
        assert!(header.starts_with("MissingAuthenticationTokenException:"), "{header}");
        let stats = sandbox.stats();
        assert_eq!(stats.ses.failed.unauthorized, 5);
        assert_eq!(stats.ses.accepted, 0);
        assert!(sandbox.messages(SandboxProvider::Ses).is_empty());
    }

    #[tokio::test]
    async fn invalid_bodies_get_ses_400s() {
        let (base, sandbox) = start(quiet()).await;
        let invalid = [
            BODY.replace("\"FromEmailAddress\":\"noreply@shop.example\",", ""),
            BODY.replace("jane.doe@example.org", "jane.doe"),
            BODY.replace("\"Subject\":{\"Data\":\"Hi\",\"Charset\":\"UTF-8\"},", ""),
            BODY.replace("\"Text\"", "\"Rich\""),
            BODY.replace("\"Value\":\"acme\"", "\"Value\":\"acme.eu\""),
        ];
        for body in &invalid {
            let (status, header, message) =
                error_of(post_signed(&base, body, body, KEY, SECRET, now()).await).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(header, format!("BadRequestException:{SES_NAMESPACE}"));
            assert!(!message.is_empty());
        }
        let (status, header, _) =
            error_of(post_signed(&base, "{", "{", KEY, SECRET, now()).await).await;
        assert_eq!(status, 400);
        assert!(header.starts_with("SerializationException:"), "{header}");
        assert_eq!(sandbox.stats().ses.failed.invalid, 6);
    }

    #[cfg(feature = "http")]
    mod client {
        use steps::model::ProviderName;
        use steps::outcome::{ErrorClass, SendOutcome};
        use steps::render::Content;
        use workflows::ports::Provider;

        use super::*;
        use crate::testing::message;

        fn email() -> Content {
            Content::Email { subject: "Hi".into(), html: Some("<p>Hi</p>".into()), text: None }
        }

        fn ses(base: &str, secret: &str) -> crate::ses::Ses {
            let mut config = dev_ses_config(base);
            config.secret_access_key = crate::Secret::new(secret).expect("secret");
            crate::ses::Ses::new(ProviderName::new("ses").expect("id"), config).expect("builds")
        }

        #[tokio::test]
        async fn the_real_client_is_accepted_and_its_tags_kept() {
            let (base, sandbox) = start(quiet()).await;
            let outcome = ses(&base, SECRET).send(&message(email())).await;
            let SendOutcome::Accepted { provider_message_id: Some(id), delivered: false } = outcome
            else {
                panic!("expected acceptance: {outcome:?}")
            };
            let kept = sandbox.messages(SandboxProvider::Ses);
            assert_eq!(kept[0].message_id, id);
            assert_eq!(kept[0].request["ConfigurationSetName"], "courant-dev");
            let tags = ses_tags(&kept[0]);
            assert_eq!(tags["notification_id"], ["n_01HZX3V4"]);
            assert_eq!(tags["tenant"], ["acme"]);
            assert_eq!(tags["attempt"], ["2"]);
        }

        /// With receipts on, the fake SES publishes `Send` then `Delivery` (or a permanent
        /// `Bounce`) as SNS notifications signed with its certificate, naming our ids: what
        /// courant's SES webhook verifies and applies.
        #[tokio::test]
        async fn receipts_are_sns_notifications_signed_with_the_sandbox_certificate() {
            use crate::receipt::ReceiptKind;
            use crate::testing::{Canned, capture_server};
            for (undelivered, last) in [(0.0, ReceiptKind::Delivered), (1.0, ReceiptKind::Bounced)]
            {
                let (sink, mut rx) = capture_server(Canned::json(200, "{}")).await;
                let mut config = SandboxConfig { seed: Some(7), ..SandboxConfig::default() };
                config.ses.behaviour = quiet();
                config.ses.receipts = crate::sandbox::ReceiptBehaviour {
                    enabled: true,
                    delay_ms: 10,
                    undelivered_rate: undelivered,
                    ..Default::default()
                };
                config.ses.receipts_url = Some(format!("{sink}/v1/webhooks/ses/ses"));
                let sandbox = Sandbox::new(config).expect("valid config");
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let base = format!("http://{}", listener.local_addr().expect("addr"));
                tokio::spawn(serve_with(listener, sandbox.clone(), std::future::pending()));
                let outcome = ses(&base, SECRET).send(&message(email())).await;
                assert!(matches!(outcome, SendOutcome::Accepted { .. }), "{outcome:?}");
                let cert = crate::sns::SigningCert::from_pem(sandbox.ses_signing_cert_pem())
                    .expect("the certificate parses");
                let mut kinds = Vec::new();
                for _ in 0..2 {
                    let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                        .await
                        .expect("a notification arrives")
                        .expect("the sink is open");
                    assert_eq!(got.uri.path(), "/v1/webhooks/ses/ses");
                    assert_eq!(got.header("x-amz-sns-message-type"), "Notification");
                    let message = crate::sns::SnsMessage::parse(&got.body).expect("SNS JSON");
                    assert_eq!(message.topic_arn, sandbox.ses_topic_arn());
                    crate::sns::verify(&message, &cert, now_ms(), 300).expect("signed");
                    // A byte changed in the signed message no longer verifies.
                    let mut forged = message.clone();
                    forged.message = forged.message.replacen("acme", "acmf", 1);
                    assert!(crate::sns::verify(&forged, &cert, now_ms(), 300).is_err());
                    let parsed = crate::sns::parse_ses(&message.message).expect("an SES event");
                    let event = &parsed.events[0];
                    assert_eq!(event.notification_id.as_str(), "n_01HZX3V4");
                    assert_eq!(event.tenant.as_str(), "acme");
                    kinds.push(event.kind);
                }
                kinds.sort_by_key(|k| *k == last);
                assert_eq!(kinds, [ReceiptKind::Accepted, last]);
            }
        }

        #[tokio::test]
        async fn the_real_client_classifies_the_sandboxs_answers() {
            let (base, sandbox) = start(quiet()).await;
            let outcome = ses(&base, "wrong-secret").send(&message(email())).await;
            let SendOutcome::Failed(e) = outcome else { panic!("{outcome:?}") };
            assert_eq!(e.class, ErrorClass::ProviderConfig);
            assert_eq!(e.code.as_deref(), Some("InvalidSignatureException"));

            let limited = Behaviour { rate_limited_rate: 1.0, retry_after_secs: 3, ..quiet() };
            sandbox.set_behaviour(SandboxProvider::Ses, limited).expect("valid");
            let outcome = ses(&base, SECRET).send(&message(email())).await;
            let SendOutcome::Failed(e) = outcome else { panic!("{outcome:?}") };
            assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: Some(3_000) });
            assert_eq!(e.code.as_deref(), Some("TooManyRequestsException"));

            let failing = Behaviour { server_error_rate: 1.0, ..quiet() };
            sandbox.set_behaviour(SandboxProvider::Ses, failing).expect("valid");
            let outcome = ses(&base, SECRET).send(&message(email())).await;
            let SendOutcome::Failed(e) = outcome else { panic!("{outcome:?}") };
            assert!(matches!(e.class, ErrorClass::Retryable { .. }), "{e:?}");

            let hanging = Behaviour { hang_rate: 1.0, hang_ms: 2_000, ..quiet() };
            sandbox.set_behaviour(SandboxProvider::Ses, hanging).expect("valid");
            let mut config = dev_ses_config(&base);
            config.timeout_ms = 300;
            config.connect_timeout_ms = 300;
            let provider = crate::ses::Ses::new(ProviderName::new("ses").expect("id"), config)
                .expect("builds");
            let outcome = provider.send(&message(email())).await;
            let SendOutcome::Failed(e) = outcome else { panic!("{outcome:?}") };
            assert_eq!(e.class, ErrorClass::Unknown);
            let stats = sandbox.stats();
            assert_eq!(stats.ses.failed.hung, 1);
            assert_eq!(stats.ses.received, stats.ses.accepted + stats.ses.failed.total());
        }
    }
}
