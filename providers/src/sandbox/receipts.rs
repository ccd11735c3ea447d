//! Signed delivery receipts from the sandbox, the way the real providers send them.
//!
//! After the fake SendGrid takes a message it posts Signed Event Webhook requests (`processed`,
//! then `delivered` or a hard `bounce`) to `sandbox.sendgrid.receipts_url`, signed with the
//! sandbox's own P-256 key ([`Sandbox::sendgrid_webhook_key`] gives its public half, which
//! `courant dev` configures); after the fake Twilio takes one it posts status callbacks (`sent`,
//! then `delivered` or `undelivered` with error 30003) to the message's `StatusCallback` URL,
//! signed with the account's auth token; after the fake SES takes one it publishes SES events
//! (`Send`, then `Delivery` or a permanent `Bounce`, our ids in `mail.tags`) as SNS
//! notifications signed with the sandbox's SNS key to `sandbox.ses.receipts_url`, as a
//! configuration set's SNS destination does ([`Sandbox::ses_signing_cert_pem`] is the certificate
//! to pin). All are off unless `receipts.enabled`.
//!
//! Per provider, [`ReceiptBehaviour`] sets the delay and the faults the real webhooks have: a
//! lost final receipt, a duplicated one, the two posts reordered (the final one first), a late
//! one. Draws come from the sandbox's seeded generator, in the order messages arrive.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{LATENCY_MS_MAX, Sandbox, SandboxProvider, now_ms};
use crate::Error;
use crate::sendgrid::webhook as sendgrid;
use crate::twilio::webhook as twilio;

/// The longest receipt lateness accepted, in ms.
pub const LATE_MS_MAX: u64 = 600_000;

/// How a fake provider's receipts behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBehaviour {
    /// Whether receipts are sent at all (default off: a standalone sandbox does not know
    /// where courant listens, and tests that expect `sent` stay there).
    #[serde(default)]
    pub enabled: bool,
    /// Delay from taking the message to its first receipt, in ms (default 50); the final one
    /// follows after as long again.
    #[serde(default = "delay_ms_default")]
    pub delay_ms: u64,
    /// Fraction of messages that end undelivered (SendGrid: a hard bounce; Twilio:
    /// `undelivered`, 30003) instead of delivered (default 0).
    #[serde(default)]
    pub undelivered_rate: f64,
    /// Fraction of final receipts never sent (default 0).
    #[serde(default)]
    pub lost_rate: f64,
    /// Fraction of final receipts sent twice (default 0).
    #[serde(default)]
    pub duplicated_rate: f64,
    /// Fraction of messages whose final receipt comes before the first (default 0).
    #[serde(default)]
    pub reordered_rate: f64,
    /// Fraction of final receipts sent `late_ms` late (default 0).
    #[serde(default)]
    pub late_rate: f64,
    /// How late a late receipt is, in ms (default 10,000).
    #[serde(default = "late_ms_default")]
    pub late_ms: u64,
}

fn delay_ms_default() -> u64 {
    50
}

fn late_ms_default() -> u64 {
    10_000
}

impl Default for ReceiptBehaviour {
    fn default() -> Self {
        Self {
            enabled: false,
            delay_ms: delay_ms_default(),
            undelivered_rate: 0.0,
            lost_rate: 0.0,
            duplicated_rate: 0.0,
            reordered_rate: 0.0,
            late_rate: 0.0,
            late_ms: late_ms_default(),
        }
    }
}

impl ReceiptBehaviour {
    /// Checks the bounds; `section` names it in errors.
    pub fn validate(&self, section: &str) -> Result<(), Error> {
        if self.delay_ms > LATENCY_MS_MAX {
            return Err(Error::config(
                section,
                "receipts.delay_ms",
                format!("at most {LATENCY_MS_MAX}"),
            ));
        }
        if self.late_ms > LATE_MS_MAX {
            return Err(Error::config(
                section,
                "receipts.late_ms",
                format!("at most {LATE_MS_MAX}"),
            ));
        }
        let rates = [
            ("receipts.undelivered_rate", self.undelivered_rate),
            ("receipts.lost_rate", self.lost_rate),
            ("receipts.duplicated_rate", self.duplicated_rate),
            ("receipts.reordered_rate", self.reordered_rate),
            ("receipts.late_rate", self.late_rate),
        ];
        for (field, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(Error::config(section, field, "must be between 0 and 1"));
            }
        }
        Ok(())
    }
}

/// What the draws decided for one message's receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    /// The final receipt says undelivered.
    pub undelivered: bool,
    /// (delay in ms, is the final receipt) of each post, in any order.
    pub posts: [Option<(u64, bool)>; 3],
}

impl Sandbox {
    /// Draws the receipts of a message `provider` just took, or `None` when its receipts are
    /// off.
    pub(super) fn plan_receipts(&self, provider: SandboxProvider) -> Option<Plan> {
        use rand::RngExt as _;
        let behaviour = match provider {
            SandboxProvider::Sendgrid => &self.shared.receipts[0],
            SandboxProvider::Twilio => &self.shared.receipts[1],
            SandboxProvider::Ses => &self.shared.receipts[2],
            _ => return None,
        };
        if !behaviour.enabled {
            return None;
        }
        let mut inner = self.lock();
        let mut draw = |rate: f64| rate > 0.0 && inner.rng.random::<f64>() < rate;
        let undelivered = draw(behaviour.undelivered_rate);
        let lost = draw(behaviour.lost_rate);
        let duplicated = draw(behaviour.duplicated_rate);
        let reordered = draw(behaviour.reordered_rate);
        let late = draw(behaviour.late_rate);
        let first = behaviour.delay_ms;
        let mut last = if reordered { first / 2 } else { first * 2 };
        if late {
            last += behaviour.late_ms;
        }
        let final_post = (!lost).then_some((last, true));
        let again = (!lost && duplicated).then_some((last + behaviour.delay_ms, true));
        Some(Plan { undelivered, posts: [Some((first, false)), final_post, again] })
    }

    /// Sends the SendGrid receipts of message `message_id` (a request body with our
    /// `custom_args`), as planned.
    pub(super) fn send_sendgrid_receipts(
        &self,
        plan: Plan,
        message_id: &str,
        request: &serde_json::Value,
    ) {
        let Some(url) = self.shared.sendgrid_receipts_url.clone() else { return };
        let first = &request["personalizations"][0];
        let args = &first["custom_args"];
        let email = first["to"][0]["email"].clone();
        for (delay_ms, is_final) in plan.posts.into_iter().flatten() {
            let event = match (is_final, plan.undelivered) {
                (false, _) => serde_json::json!({"event": "processed"}),
                (true, false) => serde_json::json!({"event": "delivered", "response": "250 OK"}),
                (true, true) => serde_json::json!({
                    "event": "bounce", "type": "bounce", "status": "5.1.1",
                    "reason": "550 5.1.1 The email account that you tried to reach does not exist"
                }),
            };
            let mut event = event;
            if let Some(object) = event.as_object_mut() {
                object.insert("email".into(), email.clone());
                object.insert("sg_message_id".into(), format!("{message_id}.sandbox").into());
                if let Some(args) = args.as_object() {
                    object.extend(args.clone());
                }
            }
            let sandbox = self.clone();
            let url = url.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                let mut event = event;
                event["timestamp"] = (now_ms() / 1_000).into();
                let body = serde_json::to_vec(&[event]).unwrap_or_default();
                let timestamp = now_ms() / 1_000;
                let signature = sendgrid::sign(&sandbox.shared.signing_key, timestamp, &body);
                let posted = sandbox
                    .shared
                    .client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(sendgrid::SIGNATURE_HEADER, signature)
                    .header(sendgrid::TIMESTAMP_HEADER, timestamp.to_string())
                    .body(body)
                    .send()
                    .await;
                if let Err(error) = posted {
                    tracing::debug!(%error, "Sandbox receipt not delivered.");
                }
            });
        }
    }

    /// Sends the Twilio status callbacks of message `sid` to `callback`, as planned.
    pub(super) fn send_twilio_receipts(&self, plan: Plan, sid: &str, callback: &str) {
        for (delay_ms, is_final) in plan.posts.into_iter().flatten() {
            let mut params = vec![
                ("AccountSid".to_owned(), self.shared.twilio_account.clone()),
                ("MessageSid".to_owned(), sid.to_owned()),
                ("SmsSid".to_owned(), sid.to_owned()),
                ("ApiVersion".to_owned(), "2010-04-01".to_owned()),
            ];
            let status = match (is_final, plan.undelivered) {
                (false, _) => "sent",
                (true, false) => "delivered",
                (true, true) => {
                    params.push(("ErrorCode".to_owned(), "30003".to_owned()));
                    "undelivered"
                }
            };
            params.push(("MessageStatus".to_owned(), status.to_owned()));
            params.push(("SmsStatus".to_owned(), status.to_owned()));
            let signature =
                twilio::signature(self.shared.twilio_token.expose().as_bytes(), callback, &params);
            let sandbox = self.clone();
            let callback = callback.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                let posted = sandbox
                    .shared
                    .client
                    .post(&callback)
                    .header(twilio::SIGNATURE_HEADER, signature)
                    .form(&params)
                    .send()
                    .await;
                if let Err(error) = posted {
                    tracing::debug!(%error, "Sandbox status callback not delivered.");
                }
            });
        }
    }
}

impl Sandbox {
    /// Publishes the SES events of message `message_id` (the SendEmail request body, whose
    /// `EmailTags` carry our ids), as planned, each as a signed SNS notification.
    pub(super) fn send_ses_receipts(
        &self,
        plan: Plan,
        message_id: &str,
        request: &serde_json::Value,
    ) {
        let Some(url) = self.shared.ses_receipts_url.clone() else { return };
        let mut tags = serde_json::Map::new();
        for tag in request["EmailTags"].as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (tag["Name"].as_str(), tag["Value"].as_str()) {
                tags.insert(name.to_owned(), serde_json::json!([value]));
            }
        }
        let to = request["Destination"]["ToAddresses"][0].clone();
        let source = request["FromEmailAddress"].clone();
        for (n, (delay_ms, is_final)) in plan.posts.into_iter().flatten().enumerate() {
            let sandbox = self.clone();
            let url = url.clone();
            let (tags, to, source) = (tags.clone(), to.clone(), source.clone());
            let message_id = message_id.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                let at = iso8601(now_ms());
                let mail = serde_json::json!({
                    "timestamp": at, "source": source, "messageId": message_id,
                    "destination": [to], "tags": tags,
                });
                let event = match (is_final, plan.undelivered) {
                    (false, _) => {
                        serde_json::json!({"eventType": "Send", "mail": mail, "send": {}})
                    }
                    (true, false) => serde_json::json!({
                        "eventType": "Delivery", "mail": mail,
                        "delivery": {"timestamp": at, "recipients": [to],
                                     "smtpResponse": "250 2.6.0 Message received"},
                    }),
                    (true, true) => serde_json::json!({
                        "eventType": "Bounce", "mail": mail,
                        "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                                   "bouncedRecipients": [{"emailAddress": to}], "timestamp": at},
                    }),
                };
                let sns_id = format!("{message_id}-{n}");
                let notification = match sandbox.shared.sns.notification(
                    &sandbox.shared.ses_topic_arn,
                    &sns_id,
                    &event.to_string(),
                    &at,
                ) {
                    Ok(notification) => notification,
                    Err(rejection) => {
                        tracing::warn!(reason = rejection.as_str(), "Sandbox SNS signing failed.");
                        return;
                    }
                };
                let posted = sandbox
                    .shared
                    .client
                    .post(&url)
                    .header("content-type", "text/plain; charset=UTF-8")
                    .header("x-amz-sns-message-type", "Notification")
                    .header("x-amz-sns-topic-arn", sandbox.shared.ses_topic_arn.as_str())
                    .body(notification.to_string())
                    .send()
                    .await;
                if let Err(error) = posted {
                    tracing::debug!(%error, "Sandbox SES event not delivered.");
                }
            });
        }
    }
}

/// `ms` as SNS writes its `Timestamp` (ISO 8601, UTC, milliseconds).
fn iso8601(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}
