//! What the push providers (FCM, APNs) share: sending one message to each of the recipient's
//! devices of their platforms, and summing the answers up into one outcome.
//!
//! # One message, several devices
//! A push provider makes one call per device, in the order the directory holds them, and reports
//! each device's result ([`DeviceOutcome`]); the runner removes the dead ones from the recipient.
//!
//! - A dead token (FCM `UNREGISTERED` or an invalid registration token, APNs 410,
//!   `BadDeviceToken`, `Unregistered`) marks its device dead and the send moves on to the next.
//! - A configuration or rate-limit answer (or an open breaker) would come back for every device
//!   alike: the remaining devices are not tried.
//! - Any other failure is recorded for its device, and the send moves on.
//!
//! The notification's outcome:
//! - **accepted** when at least one device accepted, even if another failed retryably. The
//!   lifecycle's unit is the notification, not the device: retrying it would send it again to the
//!   devices that took it (a duplicate alert on the user's phone), and keeping per-device progress
//!   across attempts would mean a new durable field in every record for a channel that is
//!   best-effort per device anyway. The person has the message on at least one device; the
//!   history names the devices that missed it and why.
//! - otherwise the first failure of a device that is not dead (so a retry goes to the devices
//!   still registered: the dead ones are removed before it);
//! - otherwise, every device being dead, [`ErrorClass::TokenInvalid`] (permanent for push);
//! - and with no device of the provider's platforms, [`ErrorClass::PermanentRecipient`].
//!
//! # Several push services: [`PushGroup`]
//! A route is a failover order: one provider takes the message. A recipient with an iPhone and
//! an Android tablet needs two services at once, so a [`PushGroup`] (one provider to the route)
//! hands the message to each of its members, each sending to the devices of its platforms, and
//! adds their results up with the same rules as above.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use steps::model::{Channel, ProviderName};

use steps::render::Content;

use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use steps::recipient::{Device, Platform};
use workflows::ports::{Delivery, DeviceOutcome, DeviceResult, Outbound, Provider, SendHints};

use crate::inapp::content_channel;

/// The push title and body of `message`, or why it cannot go out on push.
pub(crate) fn push_content(message: &Outbound) -> Result<(&str, &str), ProviderError> {
    match &message.content {
        Content::Push { title, body } => Ok((title, body)),
        other => Err(ProviderError::new(
            ErrorClass::ProviderConfig,
            None,
            None,
            &format!("push provider got {} content", content_channel(other)),
        )),
    }
}

/// The devices of `message` on `platforms`, in the directory's order.
pub(crate) fn devices_on<'a>(
    devices: &'a [Device],
    platforms: &'a [Platform],
) -> impl Iterator<Item = &'a Device> + 'a {
    devices.iter().filter(move |d| platforms.contains(&d.platform))
}

/// The body of a push provider's `Provider::deliver`: inside a span naming the notification
/// and provider, sends to each of the message's devices on `platforms` with `send_one`, logs
/// the outcome and returns the delivery. `what` names the platforms for messages.
#[cfg(feature = "http")]
pub(crate) fn deliver_each<'a, F, Fut>(
    provider: &'a ProviderName,
    message: &'a Outbound,
    platforms: &'a [Platform],
    what: &'a str,
    send_one: F,
) -> BoxFuture<'a, Delivery>
where
    F: FnMut(&'a Device) -> Fut + Send + 'a,
    Fut: Future<Output = SendOutcome> + Send + 'a,
{
    use tracing::Instrument as _;
    let span = tracing::debug_span!(
        "provider_send",
        notification_id = %message.notification_id,
        provider = %provider,
    );
    Box::pin(
        async move {
            let devices = devices_on(&message.devices, platforms);
            let delivery = each_device(devices, what, send_one).await;
            crate::http::log_outcome(provider, &message.notification_id, &delivery.outcome);
            delivery
        }
        .instrument(span),
    )
}

/// Sends to each of `devices` with `send_one` and sums the answers up (see the module docs).
/// `platforms` names the provider's platforms, for the message when there is no device.
pub(crate) async fn each_device<'d, F, Fut>(
    devices: impl IntoIterator<Item = &'d Device>,
    platforms: &str,
    mut send_one: F,
) -> Delivery
where
    F: FnMut(&'d Device) -> Fut,
    Fut: Future<Output = SendOutcome>,
{
    let mut results = Vec::new();
    let mut accepted: Option<SendOutcome> = None;
    let mut failure: Option<ProviderError> = None;
    let mut dead: Option<ProviderError> = None;
    let mut stopped = false;
    for device in devices {
        if stopped {
            results
                .push(DeviceResult { device: device.id.clone(), outcome: DeviceOutcome::Skipped });
            continue;
        }
        let outcome = match send_one(device).await {
            answer @ SendOutcome::Accepted { .. } => {
                accepted.get_or_insert(answer);
                DeviceOutcome::Accepted
            }
            SendOutcome::Failed(error) if error.class == ErrorClass::TokenInvalid => {
                dead.get_or_insert(error);
                DeviceOutcome::Dead
            }
            SendOutcome::Failed(error) => {
                let class = error.class;
                stopped = matches!(
                    class,
                    ErrorClass::ProviderConfig
                        | ErrorClass::RateLimited { .. }
                        | ErrorClass::CircuitOpen { .. }
                );
                failure.get_or_insert(error);
                DeviceOutcome::Failed(class)
            }
        };
        results.push(DeviceResult { device: device.id.clone(), outcome });
    }
    let outcome = match (accepted, failure, dead) {
        (Some(accepted), _, _) => accepted,
        (None, Some(error), _) => SendOutcome::Failed(error),
        // Every device is dead: the first one's answer, with its status and code.
        (None, None, Some(mut error)) => {
            error.message = format!(
                "every {platforms} device token of the recipient is invalid: {}",
                error.message
            );
            SendOutcome::Failed(ProviderError::new(
                error.class,
                error.status,
                error.code,
                &error.message,
            ))
        }
        (None, None, None) => SendOutcome::Failed(ProviderError::new(
            ErrorClass::PermanentRecipient,
            None,
            None,
            &format!("the recipient has no {platforms} device"),
        )),
    };
    Delivery { outcome, devices: results }
}

/// Push providers used together: each member sends to the devices of its platforms (FCM to
/// Android and web, APNs to iOS), so a recipient gets the message on every device whatever
/// service it uses. The members keep their own circuit breakers.
#[derive(Debug)]
pub struct PushGroup {
    name: ProviderName,
    members: Vec<Arc<dyn Provider>>,
}

impl PushGroup {
    /// A group named `name` of push providers, tried in order.
    pub fn new(name: ProviderName, members: Vec<Arc<dyn Provider>>) -> Self {
        Self { name, members }
    }
}

impl Provider for PushGroup {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::Push
    }

    fn send<'a>(&'a self, message: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move { self.deliver(message, &SendHints::default()).await.outcome })
    }

    fn deliver<'a>(
        &'a self,
        message: &'a Outbound,
        hints: &'a SendHints,
    ) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            let mut parts = Vec::with_capacity(self.members.len());
            for member in &self.members {
                parts.push(member.deliver(message, hints).await);
            }
            merge(parts)
        })
    }
}

/// Adds the members' deliveries up: accepted when one member accepted; else the first failure
/// of a member that had devices and not only dead ones; else token invalid when every device
/// was dead; else (no member had a device) the recipient has no push device.
fn merge(parts: Vec<Delivery>) -> Delivery {
    let mut devices = Vec::new();
    let mut accepted = None;
    let mut failure = None;
    let mut dead = None;
    let mut none = None;
    for part in parts {
        let all_dead = part.devices.iter().all(|d| d.outcome == DeviceOutcome::Dead);
        match part.outcome {
            outcome @ SendOutcome::Accepted { .. } => {
                accepted.get_or_insert(outcome);
            }
            SendOutcome::Failed(error) if part.devices.is_empty() => {
                none.get_or_insert(error);
            }
            SendOutcome::Failed(error) if all_dead => {
                dead.get_or_insert(error);
            }
            SendOutcome::Failed(error) => {
                failure.get_or_insert(error);
            }
        }
        devices.extend(part.devices);
    }
    let outcome = match (accepted, failure, dead, none) {
        (Some(accepted), ..) => accepted,
        (None, Some(error), ..) | (None, None, Some(error), _) => SendOutcome::Failed(error),
        (None, None, None, Some(_)) | (None, None, None, None) => {
            SendOutcome::Failed(ProviderError::new(
                ErrorClass::PermanentRecipient,
                None,
                None,
                "the recipient has no push device any provider of the group sends to",
            ))
        }
    };
    Delivery { outcome, devices }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use steps::recipient::DeviceToken;

    use super::*;

    fn device(token: &str) -> Device {
        Device::new(Platform::Android, DeviceToken::parse(token).expect("token"), 1)
    }

    fn fail(class: ErrorClass) -> SendOutcome {
        SendOutcome::Failed(ProviderError::new(class, Some(400), None, "x"))
    }

    fn ok(id: &str) -> SendOutcome {
        SendOutcome::Accepted { provider_message_id: Some(id.into()), delivered: false }
    }

    /// Runs `each_device` over devices named by their tokens, answering from `answers` by token.
    fn run(tokens: &[&str], answers: &[(&str, SendOutcome)]) -> (Delivery, Vec<String>) {
        let devices: Vec<Device> = tokens.iter().map(|t| device(t)).collect();
        let mut called = Vec::new();
        let delivery = block_on(each_device(&devices, "android or web", |d| {
            called.push(d.token.expose().to_owned());
            let answer = answers.iter().find(|(t, _)| *t == d.token.expose()).expect("scripted");
            std::future::ready(answer.1.clone())
        }));
        (delivery, called)
    }

    #[test]
    fn a_dead_device_is_reported_and_the_others_still_get_the_message() {
        let (delivery, called) = run(
            &["dead", "alive", "alive2"],
            &[("dead", fail(ErrorClass::TokenInvalid)), ("alive", ok("m1")), ("alive2", ok("m2"))],
        );
        assert_eq!(called, ["dead", "alive", "alive2"]);
        assert_eq!(delivery.outcome, ok("m1"));
        let outcomes: Vec<DeviceOutcome> = delivery.devices.iter().map(|d| d.outcome).collect();
        assert_eq!(
            outcomes,
            [DeviceOutcome::Dead, DeviceOutcome::Accepted, DeviceOutcome::Accepted]
        );
        assert_eq!(delivery.dead().collect::<Vec<_>>(), [&device("dead").id]);
    }

    #[test]
    fn one_acceptance_makes_the_notification_accepted_despite_a_retryable_failure() {
        let (delivery, _) =
            run(&["a", "b"], &[("a", ok("m1")), ("b", fail(ErrorClass::RETRYABLE))]);
        assert_eq!(delivery.outcome, ok("m1"));
        assert_eq!(delivery.devices[1].outcome, DeviceOutcome::Failed(ErrorClass::RETRYABLE));
        let summary = delivery.summary().expect("devices");
        assert!(
            summary.contains("accepted") && summary.contains("failed (retryable)"),
            "{summary}"
        );
        assert!(!summary.contains("\"a\""), "{summary}");
    }

    #[test]
    fn all_dead_is_token_invalid_and_none_is_permanent() {
        let (delivery, _) = run(
            &["x", "y"],
            &[("x", fail(ErrorClass::TokenInvalid)), ("y", fail(ErrorClass::TokenInvalid))],
        );
        let SendOutcome::Failed(e) = &delivery.outcome else { panic!("failed expected") };
        assert_eq!(e.class, ErrorClass::TokenInvalid);
        assert_eq!(delivery.dead().count(), 2);
        let (delivery, called) = run(&[], &[]);
        let SendOutcome::Failed(e) = &delivery.outcome else { panic!("failed expected") };
        assert_eq!(e.class, ErrorClass::PermanentRecipient);
        assert!(called.is_empty());
    }

    /// A member that sends to the devices whose token starts with its prefix.
    #[derive(Debug)]
    struct Member(ProviderName, &'static str);

    impl Provider for Member {
        fn name(&self) -> &ProviderName {
            &self.0
        }
        fn channel(&self) -> Channel {
            Channel::Push
        }
        fn send<'a>(&'a self, _: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
            Box::pin(std::future::ready(fail(ErrorClass::ProviderConfig)))
        }
        fn deliver<'a>(
            &'a self,
            message: &'a Outbound,
            _: &'a SendHints,
        ) -> BoxFuture<'a, Delivery> {
            let mine = message.devices.iter().filter(|d| d.token.expose().starts_with(self.1));
            Box::pin(each_device(mine, self.1, |d| {
                std::future::ready(if d.token.expose().contains("dead") {
                    fail(ErrorClass::TokenInvalid)
                } else {
                    ok(d.token.expose())
                })
            }))
        }
    }

    fn group() -> PushGroup {
        let member = |name: &str, prefix| {
            Arc::new(Member(ProviderName::new(name).expect("name"), prefix)) as Arc<dyn Provider>
        };
        PushGroup::new(
            ProviderName::new("push").expect("name"),
            vec![member("apns", "ios"), member("fcm", "android")],
        )
    }

    fn to(tokens: &[&str]) -> Outbound {
        let mut message =
            crate::testing::message(Content::Push { title: "t".into(), body: "b".into() });
        message.devices = tokens.iter().map(|t| device(t)).collect();
        message
    }

    #[test]
    fn a_group_sends_through_every_member_to_its_devices() {
        let delivery = block_on(
            group().deliver(&to(&["android-1", "ios-dead", "ios-2"]), &SendHints::default()),
        );
        assert_eq!(delivery.outcome, ok("ios-2"));
        let outcomes: Vec<DeviceOutcome> = delivery.devices.iter().map(|d| d.outcome).collect();
        assert_eq!(
            outcomes,
            [DeviceOutcome::Dead, DeviceOutcome::Accepted, DeviceOutcome::Accepted]
        );
        // Android only: the APNs member has nothing to do, FCM takes it.
        let delivery = block_on(group().deliver(&to(&["android-1"]), &SendHints::default()));
        assert_eq!(delivery.outcome, ok("android-1"));
        // All dead across members: token invalid; no device at all: permanent.
        let delivery =
            block_on(group().deliver(&to(&["android-dead", "ios-dead"]), &SendHints::default()));
        let SendOutcome::Failed(e) = &delivery.outcome else { panic!("{delivery:?}") };
        assert_eq!((e.class, delivery.dead().count()), (ErrorClass::TokenInvalid, 2));
        let delivery = block_on(group().deliver(&to(&["web-1"]), &SendHints::default()));
        let SendOutcome::Failed(e) = &delivery.outcome else { panic!("{delivery:?}") };
        assert_eq!(e.class, ErrorClass::PermanentRecipient);
    }

    #[test]
    fn a_configuration_answer_stops_the_send_and_a_retryable_one_is_the_outcome() {
        let (delivery, called) = run(
            &["dead", "conf", "later"],
            &[
                ("dead", fail(ErrorClass::TokenInvalid)),
                ("conf", fail(ErrorClass::ProviderConfig)),
                ("later", ok("m")),
            ],
        );
        assert_eq!(called, ["dead", "conf"]);
        assert_eq!(delivery.devices[2].outcome, DeviceOutcome::Skipped);
        let SendOutcome::Failed(e) = &delivery.outcome else { panic!("failed expected") };
        assert_eq!(e.class, ErrorClass::ProviderConfig);
        let (delivery, _) = run(
            &["dead", "busy"],
            &[("dead", fail(ErrorClass::TokenInvalid)), ("busy", fail(ErrorClass::RETRYABLE))],
        );
        let SendOutcome::Failed(e) = &delivery.outcome else { panic!("failed expected") };
        assert_eq!(e.class, ErrorClass::RETRYABLE);
        assert_eq!(delivery.dead().count(), 1);
    }
}
