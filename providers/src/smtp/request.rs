//! The message: MIME, headers and envelope, built from one outbound message by `lettre`.
//!
//! `multipart/alternative` with the text part first and the HTML part last (RFC 2046 5.1.4: the
//! last is the preferred), or a single part when only one is rendered. `Message-ID` is made from
//! our ids (`<notification.attempt.tenant@sender-domain>`), so a bounce quoting it finds its
//! notification, and `X-Courant-Notification-Id` carries the id on its own for humans and filters.

use std::time::SystemTime;

use lettre::Address;
use lettre::address::Envelope;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use steps::outcome::{ErrorClass, ProviderError};
use steps::render::Content;
use workflows::ports::Outbound;

use crate::inapp::content_channel;

use super::NOTIFICATION_ID_HEADER;

/// `X-Courant-Notification-Id`.
#[derive(Debug, Clone)]
struct NotificationIdHeader(String);

impl Header for NotificationIdHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str(NOTIFICATION_ID_HEADER)
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// A message ready for the wire.
#[derive(Debug)]
pub(crate) struct Built {
    /// `MAIL FROM` and `RCPT TO`.
    pub envelope: Envelope,
    /// The formatted message (headers and body, CRLF line ends), before dot-stuffing.
    pub bytes: Vec<u8>,
    /// The `Message-ID`, without the angle brackets.
    pub message_id: String,
}

/// The `Message-ID` of `message` (without angle brackets): our ids at the sender's domain.
pub(crate) fn message_id(message: &Outbound, domain: &str) -> String {
    format!(
        "{}.{}.{}@{domain}",
        message.notification_id.as_str(),
        message.attempt.0,
        message.tenant.as_str()
    )
}

/// Builds the message from `from` for `message`, dated `date`, or the classified reason it
/// cannot be sent.
pub(crate) fn build(
    from: &Mailbox,
    message: &Outbound,
    date: SystemTime,
) -> Result<Built, ProviderError> {
    let fail = |class, text: &str| Err(ProviderError::new(class, None, None, text));
    let (subject, html, text) = match &message.content {
        Content::Email { subject, html, text } => (subject, html, text),
        other => {
            // The route sent another channel's content to an email provider: configuration.
            return fail(
                ErrorClass::ProviderConfig,
                &format!("email provider got {} content", content_channel(other)),
            );
        }
    };
    let Some(to) = &message.recipient.email else {
        return fail(ErrorClass::PermanentRecipient, "the recipient has no email address");
    };
    let Ok(to) = to.expose().parse::<Address>() else {
        return fail(
            ErrorClass::PermanentRecipient,
            "the recipient's address is not valid for SMTP",
        );
    };
    let text = text.as_deref().filter(|t| !t.is_empty());
    let html = html.as_deref().filter(|h| !h.is_empty());
    let id = message_id(message, from.email.domain());
    // A rendered subject is one line; a stray line break must not become a header of its own.
    let subject: String = subject.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let builder = lettre::Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(subject)
        .date(date)
        .message_id(Some(format!("<{id}>")))
        .header(NotificationIdHeader(message.notification_id.as_str().to_owned()));
    let built = match (text, html) {
        (Some(text), Some(html)) => {
            builder.multipart(MultiPart::alternative_plain_html(text.to_owned(), html.to_owned()))
        }
        (Some(text), None) => builder.singlepart(SinglePart::plain(text.to_owned())),
        (None, Some(html)) => builder.singlepart(SinglePart::html(html.to_owned())),
        (None, None) => {
            return fail(
                ErrorClass::PermanentRecipient,
                "the email has neither a text nor an HTML body",
            );
        }
    };
    let Ok(built) = built else {
        return fail(ErrorClass::ProviderConfig, "the message could not be assembled");
    };
    Ok(Built { envelope: built.envelope().clone(), bytes: built.formatted(), message_id: id })
}
