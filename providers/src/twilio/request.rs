//! The create-message form, built from one message.

use serde::Serialize;
use steps::model::{Attempt, NotificationId, ProviderName, TenantId};
use steps::outcome::ProviderError;
use workflows::ports::Outbound;

use crate::inapp::sms_parts;

/// The path of the status-callback webhook below courant's public base URL; the provider's name
/// follows it.
pub const STATUS_CALLBACK_PATH: &str = "/v1/webhooks/twilio";

/// The path of the Messages resource of `account_sid`, below the base URL.
pub fn messages_path(account_sid: &str) -> String {
    format!("/2010-04-01/Accounts/{account_sid}/Messages.json")
}

/// The status-callback URL a message asks Twilio to call:
/// `{base}/v1/webhooks/twilio/{provider}?n={notification_id}&t={tenant}&a={attempt}`: the
/// callback names the notification, its tenant and the attempt, since Twilio's callback body
/// carries none of our ids.
///
/// Twilio signs callbacks over the exact URL it called, so the webhook handler verifies
/// `X-Twilio-Signature` over the configured base, this path and the query as received. Provider
/// names, tenants and notification ids are restricted to `[A-Za-z0-9._-]`
/// (`steps::model::check_id`), so none needs percent-encoding.
pub fn status_callback_url(
    base: &str,
    provider: &ProviderName,
    tenant: &TenantId,
    id: &NotificationId,
    attempt: Attempt,
) -> String {
    format!(
        "{}{STATUS_CALLBACK_PATH}/{provider}?n={id}&t={tenant}&a={}",
        base.trim_end_matches('/'),
        attempt.0
    )
}

/// Who the message is from: a number or a Messaging Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sender {
    /// `From`.
    From(String),
    /// `MessagingServiceSid`.
    Service(String),
}

/// `POST .../Messages.json` form.
#[derive(Debug, Serialize)]
pub(crate) struct CreateMessage<'a> {
    /// The recipient, E.164.
    #[serde(rename = "To")]
    pub to: &'a str,
    /// The sender number, when no Messaging Service is used.
    #[serde(rename = "From", skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a str>,
    /// The Messaging Service, instead of `From`.
    #[serde(rename = "MessagingServiceSid", skip_serializing_if = "Option::is_none")]
    pub messaging_service_sid: Option<&'a str>,
    /// The text.
    #[serde(rename = "Body")]
    pub body: &'a str,
    /// Where Twilio reports status changes.
    #[serde(rename = "StatusCallback", skip_serializing_if = "Option::is_none")]
    pub status_callback: Option<String>,
}

/// Builds the form for `message`, or the classified reason it cannot be sent.
pub(crate) fn create_message<'a>(
    sender: &'a Sender,
    status_callback_base: Option<&str>,
    provider: &ProviderName,
    message: &'a Outbound,
) -> Result<CreateMessage<'a>, ProviderError> {
    let (body, to) = sms_parts(message)?;
    let (from, messaging_service_sid) = match sender {
        Sender::From(from) => (Some(from.as_str()), None),
        Sender::Service(sid) => (None, Some(sid.as_str())),
    };
    Ok(CreateMessage {
        to: to.expose(),
        from,
        messaging_service_sid,
        body,
        status_callback: status_callback_base.map(|base| {
            status_callback_url(
                base,
                provider,
                &message.tenant,
                &message.notification_id,
                message.attempt,
            )
        }),
    })
}
