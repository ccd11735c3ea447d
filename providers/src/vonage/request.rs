//! The send-SMS form, built from one message, and the delivery-receipt URL.

use serde::Serialize;
use steps::model::{NotificationId, ProviderName, TenantId};
use steps::outcome::ProviderError;
use steps::sms::Encoding;
use workflows::ports::Outbound;

use crate::inapp::sms_parts;

/// The path of the SMS API below the base URL.
pub const SMS_PATH: &str = "/sms/json";

/// The path of the delivery-receipt webhook below courant's public base URL; the provider's
/// name, the tenant and the notification id follow it.
pub const RECEIPT_PATH: &str = "/v1/webhooks/vonage";

/// Vonage's limit on `client-ref`, in characters.
pub const CLIENT_REF_CHARS_MAX: usize = 100;

/// The delivery-receipt URL a message asks Vonage to call:
/// `{base}/v1/webhooks/vonage/{provider}/{tenant}/{notification_id}`.
///
/// Tenant and id travel in the path, not in a query: Vonage delivers receipts by GET with its
/// own parameters in the query and signs exactly those, so a query of ours would mix with them.
/// Provider names, tenants and notification ids are restricted to `[A-Za-z0-9._-]`
/// (`steps::model::check_id`), so none needs percent-encoding.
pub fn callback_url(
    base: &str,
    provider: &ProviderName,
    tenant: &TenantId,
    id: &NotificationId,
) -> String {
    format!("{}{RECEIPT_PATH}/{provider}/{tenant}/{id}", base.trim_end_matches('/'))
}

/// `POST /sms/json` form. Field order is the order on the wire.
#[derive(Debug, Serialize)]
pub(crate) struct SendSms<'a> {
    /// The API key.
    pub api_key: &'a str,
    /// The API secret.
    pub api_secret: &'a str,
    /// The sender.
    pub from: &'a str,
    /// The recipient, E.164 without the `+`.
    pub to: &'a str,
    /// The text.
    pub text: &'a str,
    /// `unicode` when the text needs UCS-2; absent (Vonage's default `text`, GSM-7) otherwise.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Our notification id, echoed in the delivery receipt.
    #[serde(rename = "client-ref", skip_serializing_if = "Option::is_none")]
    pub client_ref: Option<&'a str>,
    /// Where Vonage sends the delivery receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// Our credentials and sender, as the form needs them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Account<'a> {
    /// `api_key`.
    pub api_key: &'a str,
    /// `api_secret`.
    pub api_secret: &'a str,
    /// `from`.
    pub from: &'a str,
}

/// Builds the form for `message`, or the classified reason it cannot be sent.
pub(crate) fn send_sms<'a>(
    account: Account<'a>,
    callback_base: Option<&str>,
    provider: &ProviderName,
    message: &'a Outbound,
) -> Result<SendSms<'a>, ProviderError> {
    let (text, to) = sms_parts(message)?;
    // Without `type=unicode`, Vonage sends GSM-7 and replaces what GSM-7 lacks with `?`; the
    // same counting as the template limits decides (3GPP TS 23.038).
    let kind = match steps::sms::segments(text).encoding {
        Encoding::Gsm7 => None,
        Encoding::Ucs2 => Some("unicode"),
    };
    let id = message.notification_id.as_str();
    Ok(SendSms {
        api_key: account.api_key,
        api_secret: account.api_secret,
        from: account.from,
        to: to.expose().trim_start_matches('+'),
        text,
        kind,
        // Longer ids (up to 128 characters are valid) cannot ride along; the callback URL still
        // carries them.
        client_ref: (id.chars().count() <= CLIENT_REF_CHARS_MAX).then_some(id),
        callback: callback_base
            .map(|base| callback_url(base, provider, &message.tenant, &message.notification_id)),
    })
}
