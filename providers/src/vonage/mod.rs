//! Vonage's SMS API, the second SMS provider, so SMS failover is between two different APIs.
//!
//! `POST {base_url}/sms/json` with a form of `api_key`, `api_secret`, `from`, `to` (E.164 without
//! `+`), `text`, `type=unicode` when the text needs UCS-2, `client-ref` (our notification id) and,
//! when a public callback base is configured, `callback` (the delivery-receipt URL, carrying the
//! tenant and the notification id). Vonage answers `200` even for errors; the per-part `status`
//! decides, classified in `response.rs`.
//!
//! Delivery receipts are parsed and verified by [`delivery_receipt`], a pure function the
//! binary's webhook route calls; Vonage's signed-webhook scheme is in `signature.rs`.
//!
//! # Files
//! - `config.rs`: [`VonageConfig`], the TOML section.
//! - `request.rs`: the send form and the callback URL.
//! - `response.rs`: the answers and their classification.
//! - `receipt.rs`: delivery receipts into [`ReceiptEvent`](crate::receipt::ReceiptEvent).
//! - `signature.rs`: Vonage's request signatures (`sig`), for signed receipts.
//! - `service.rs`: [`Vonage`], the provider (feature `http`).
//! - `tests.rs`: wire-format, classification, receipt and signature tests.

mod config;
mod receipt;
mod request;
mod response;
#[cfg(feature = "http")]
mod service;
mod signature;
#[cfg(test)]
mod tests;

pub use config::{API_KEY_CHARS_MAX, FROM_CHARS_MAX, VonageConfig};
pub use receipt::{
    RECEIPT_FIELD_BYTES_MAX, RECEIPT_FIELDS_MAX, ReceiptCheck, ReceiptError,
    SIGNATURE_TOLERANCE_SECS, delivery_receipt, err_code_name, kind_of, receipt_fields_from_json,
};
pub use request::{CLIENT_REF_CHARS_MAX, RECEIPT_PATH, SMS_PATH, callback_url};
#[cfg(feature = "http")]
pub use service::Vonage;
pub use signature::{SignatureMethod, sign, verify};
