//! The SES v2 SendEmail body, built from one message.
//!
//! One `ToAddresses` entry, so one request is one notification (our dedup and accounting are per
//! recipient). A `Simple` message: SES builds the MIME itself from the subject and the text and
//! HTML parts, all declared UTF-8. Our ids go in `EmailTags`, which SES copies into the `mail.tags`
//! of every event it publishes for the message.

use base64::Engine as _;
use serde::Serialize;
use steps::model::EmailAddress;
use steps::outcome::{ErrorClass, ProviderError};
use steps::render::Content;
use workflows::ports::Outbound;

use crate::inapp::content_channel;

/// The path of the SendEmail endpoint, below the base URL.
pub const SEND_EMAIL_PATH: &str = "/v2/email/outbound-emails";

/// The tag carrying the notification id (a receipt parser reads this name from `mail.tags`).
pub const TAG_NOTIFICATION_ID: &str = "notification_id";
/// The tag carrying the tenant.
pub const TAG_TENANT: &str = "tenant";
/// The tag carrying the attempt number, in decimal.
pub const TAG_ATTEMPT: &str = "attempt";

/// The charset declared for every part: the rendered content is Rust text, always UTF-8.
const CHARSET: &str = "UTF-8";

/// Bytes of a display name per RFC 2047 encoded word (60 base64 characters plus the 12 of
/// `=?UTF-8?B?` and `?=` stay under the 75 allowed).
const ENCODED_WORD_BYTES_MAX: usize = 45;

/// Longest tag value SES accepts, in characters.
const TAG_VALUE_CHARS_MAX: usize = 256;

/// `POST /v2/email/outbound-emails` body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SendEmail<'a> {
    /// The sender, with its display name when configured (`Name <address>`).
    pub from_email_address: String,
    /// The one recipient.
    pub destination: Destination<'a>,
    /// The message.
    pub content: EmailContent<'a>,
    /// Our ids.
    pub email_tags: [Tag<'a>; 3],
    /// The configuration set whose event destination publishes the receipts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration_set_name: Option<&'a str>,
}

/// The recipients.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Destination<'a> {
    /// Exactly one address.
    pub to_addresses: [&'a str; 1],
}

/// The content: always a simple message here.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EmailContent<'a> {
    /// Subject and body; SES assembles the MIME.
    pub simple: Simple<'a>,
}

/// A simple message.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Simple<'a> {
    /// The subject line.
    pub subject: Text<'a>,
    /// The parts.
    pub body: Body<'a>,
}

/// The parts present (at least one).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Body<'a> {
    /// The `text/plain` part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<Text<'a>>,
    /// The `text/html` part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<Text<'a>>,
}

/// A text with its charset.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Text<'a> {
    /// The text.
    pub data: &'a str,
    /// Always `UTF-8`.
    pub charset: &'static str,
}

/// A message tag.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Tag<'a> {
    /// The tag name.
    pub name: &'static str,
    /// The tag value.
    pub value: std::borrow::Cow<'a, str>,
}

fn text(data: &str) -> Text<'_> {
    Text { data, charset: CHARSET }
}

/// The `FromEmailAddress` value: the bare address, or `"Name" <address>` with the name quoted when
/// it is printable ASCII and as an RFC 2047 encoded word otherwise (SES requires non-ASCII display
/// names to be encoded).
pub(crate) fn from_address(from: &EmailAddress, from_name: Option<&str>) -> String {
    let address = from.expose();
    match from_name {
        None => address.to_owned(),
        Some(name) if name.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
            let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{quoted}\" <{address}>")
        }
        Some(name) => {
            // RFC 2047 caps an encoded word at 75 characters: 45 bytes of UTF-8 per word (60 in
            // base64), split at character boundaries, words separated by a space.
            let mut words = Vec::new();
            let mut start = 0;
            while start < name.len() {
                let mut end = (start + ENCODED_WORD_BYTES_MAX).min(name.len());
                while !name.is_char_boundary(end) {
                    end -= 1;
                }
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(&name.as_bytes()[start..end]);
                words.push(format!("=?UTF-8?B?{encoded}?="));
                start = end;
            }
            format!("{} <{address}>", words.join(" "))
        }
    }
}

/// Whether SES accepts `value` as a tag value: ASCII letters, digits, `_` and `-`, at most 256.
fn tag_value_ok(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= TAG_VALUE_CHARS_MAX
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Builds the body for `message`, or the classified reason it cannot be sent.
pub(crate) fn send_email<'a>(
    from_address: String,
    configuration_set: Option<&'a str>,
    message: &'a Outbound,
) -> Result<SendEmail<'a>, ProviderError> {
    let (subject, html, text_part) = match &message.content {
        Content::Email { subject, html, text } => (subject, html, text),
        other => {
            // The route sent another channel's content to an email provider: configuration.
            return Err(ProviderError::new(
                ErrorClass::ProviderConfig,
                None,
                None,
                &format!("email provider got {} content", content_channel(other)),
            ));
        }
    };
    let Some(to) = &message.recipient.email else {
        return Err(ProviderError::new(
            ErrorClass::PermanentRecipient,
            None,
            None,
            "the recipient has no email address",
        ));
    };
    let body = Body {
        text: text_part.as_deref().filter(|t| !t.is_empty()).map(text),
        html: html.as_deref().filter(|h| !h.is_empty()).map(text),
    };
    if body.text.is_none() && body.html.is_none() {
        // SES would answer BadRequestException; this message can never be sent as rendered.
        return Err(ProviderError::new(
            ErrorClass::PermanentRecipient,
            None,
            None,
            "the email has neither a text nor an HTML body",
        ));
    }
    let notification_id = message.notification_id.as_str();
    let tenant = message.tenant.as_str();
    for (name, value) in [(TAG_NOTIFICATION_ID, notification_id), (TAG_TENANT, tenant)] {
        if !tag_value_ok(value) {
            // Our ids may contain '.', which SES tags cannot carry; SES would refuse every message
            // of this tenant, so another email provider should take it.
            return Err(ProviderError::new(
                ErrorClass::ProviderConfig,
                None,
                None,
                &format!("the {name} has a character SES message tags do not allow ('.')"),
            ));
        }
    }
    Ok(SendEmail {
        from_email_address: from_address,
        destination: Destination { to_addresses: [to.expose()] },
        content: EmailContent { simple: Simple { subject: text(subject), body } },
        email_tags: [
            Tag { name: TAG_NOTIFICATION_ID, value: notification_id.into() },
            Tag { name: TAG_TENANT, value: tenant.into() },
            Tag { name: TAG_ATTEMPT, value: message.attempt.0.to_string().into() },
        ],
        configuration_set_name: configuration_set,
    })
}
