//! The v3 mail send body, built from one message.
//!
//! One personalization with one `to`, so one request is one notification (our dedup and
//! accounting are per recipient). `custom_args` carry our ids: SendGrid copies them into every
//! event of the Event Webhook, which is how a receipt finds its notification.

use serde::Serialize;
use steps::model::EmailAddress;
use steps::outcome::{ErrorClass, ProviderError};
use steps::render::Content;
use workflows::ports::Outbound;

use crate::inapp::content_channel;

/// The path of the mail send endpoint, below the base URL.
pub const MAIL_SEND_PATH: &str = "/v3/mail/send";

/// `POST /v3/mail/send` body.
#[derive(Debug, Serialize)]
pub(crate) struct MailSend<'a> {
    /// Exactly one personalization: one recipient per request.
    pub personalizations: [Personalization<'a>; 1],
    /// The sender.
    pub from: Address<'a>,
    /// The subject line.
    pub subject: &'a str,
    /// `text/plain` first, then `text/html`, as SendGrid requires.
    pub content: Vec<Part<'a>>,
}

/// One personalization.
#[derive(Debug, Serialize)]
pub(crate) struct Personalization<'a> {
    /// The one recipient.
    pub to: [Address<'a>; 1],
    /// Our ids, echoed in every webhook event of this message.
    pub custom_args: CustomArgs<'a>,
}

/// An address with an optional display name.
#[derive(Debug, Serialize)]
pub(crate) struct Address<'a> {
    /// The address.
    pub email: &'a str,
    /// The display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
}

/// Our ids. SendGrid requires every custom arg value to be a string.
#[derive(Debug, Serialize)]
pub(crate) struct CustomArgs<'a> {
    /// The notification.
    pub notification_id: &'a str,
    /// The attempt, as a decimal string.
    pub attempt: String,
    /// The tenant, so a receipt can be looked up in its tenant's key space.
    pub tenant: &'a str,
}

/// One content block.
#[derive(Debug, Serialize)]
pub(crate) struct Part<'a> {
    /// The MIME type.
    #[serde(rename = "type")]
    pub mime: &'static str,
    /// The body.
    pub value: &'a str,
}

/// Builds the body for `message`, or the classified reason it cannot be sent.
pub(crate) fn mail_send<'a>(
    from: &'a EmailAddress,
    from_name: Option<&'a str>,
    message: &'a Outbound,
) -> Result<MailSend<'a>, ProviderError> {
    let (subject, html, text) = match &message.content {
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
    let mut content = Vec::with_capacity(2);
    if let Some(text) = text.as_deref().filter(|t| !t.is_empty()) {
        content.push(Part { mime: "text/plain", value: text });
    }
    if let Some(html) = html.as_deref().filter(|h| !h.is_empty()) {
        content.push(Part { mime: "text/html", value: html });
    }
    if content.is_empty() {
        // SendGrid would answer 400; this message can never be sent as rendered.
        return Err(ProviderError::new(
            ErrorClass::PermanentRecipient,
            None,
            None,
            "the email has neither a text nor an HTML body",
        ));
    }
    Ok(MailSend {
        personalizations: [Personalization {
            to: [Address { email: to.expose(), name: None }],
            custom_args: CustomArgs {
                notification_id: message.notification_id.as_str(),
                attempt: message.attempt.0.to_string(),
                tenant: message.tenant.as_str(),
            },
        }],
        from: Address { email: from.expose(), name: from_name },
        subject,
        content,
    })
}
