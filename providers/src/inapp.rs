//! The in-app provider: courant is its own provider for the in-app channel.
//!
//! Sending is storing the entry in the recipient's inbox ([`Inbox::inbox_append`], idempotent per
//! notification), so acceptance is delivery: the outcome is `Accepted { delivered: true }`. A store
//! failure is retryable, since nothing was stored and the next attempt appends the same entry.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use steps::model::{Channel, ProviderName};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use steps::render::Content;
use tracing::{debug, warn};
use workflows::ports::{Clock, Inbox, InboxItem, Outbound, Provider};

/// The in-app provider over an [`Inbox`] (Redis or in-memory storage; a cloneable handle).
pub struct InAppProvider<I> {
    /// The configured name.
    name: ProviderName,
    /// Where entries are stored.
    inbox: I,
    /// Stamps each entry's `at_ms`; a port so the simulator can pass virtual time.
    clock: Arc<dyn Clock>,
}

/// The system clock, for [`InAppProvider::new`]. The shell may read it; the core never does.
#[derive(Debug, Clone, Copy)]
struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl<I: Inbox> InAppProvider<I> {
    /// An in-app provider named `name` storing into `inbox`, stamping entries with the system
    /// clock.
    pub fn new(name: ProviderName, inbox: I) -> Self {
        Self::with_clock(name, inbox, Arc::new(SystemClock))
    }

    /// Like [`new`](Self::new), stamping entries with `clock` (the simulator's virtual time).
    pub fn with_clock(name: ProviderName, inbox: I, clock: Arc<dyn Clock>) -> Self {
        Self { name, inbox, clock }
    }

    async fn store(&self, message: &Outbound) -> SendOutcome {
        let (title, body, action) = match &message.content {
            Content::InApp { title, body, action } => (title, body, action),
            other => {
                // The route sent another channel's content here: a configuration mistake that
                // fails every such message the same way, so it opens the breaker and alerts.
                return SendOutcome::Failed(ProviderError::new(
                    ErrorClass::ProviderConfig,
                    None,
                    None,
                    &format!("in-app provider got {} content", content_channel(other)),
                ));
            }
        };
        let item = InboxItem {
            notification_id: message.notification_id.clone(),
            title: title.clone(),
            body: body.clone(),
            category: message.category.clone(),
            at_ms: self.clock.now_ms(),
            read: false,
            action: action.clone(),
        };
        match self.inbox.inbox_append(&message.tenant, &message.recipient.id, &item).await {
            Ok(()) => {
                debug!(
                    notification_id = %message.notification_id,
                    provider = %self.name,
                    "Stored in-app entry."
                );
                SendOutcome::Accepted {
                    provider_message_id: Some(message.notification_id.as_str().to_owned()),
                    delivered: true,
                }
            }
            Err(error) => {
                warn!(
                    %error,
                    notification_id = %message.notification_id,
                    provider = %self.name,
                    "Inbox store failed."
                );
                SendOutcome::Failed(ProviderError::new(
                    ErrorClass::RETRYABLE,
                    None,
                    None,
                    &format!("inbox store failed: {error}"),
                ))
            }
        }
    }
}

/// An SMS provider's message: its body and the recipient's number, or the classified reason it
/// can never be sent (another channel's content is our routing, the rest this message's).
pub(crate) fn sms_parts(
    message: &Outbound,
) -> Result<(&str, &steps::model::PhoneNumber), ProviderError> {
    let body = match &message.content {
        Content::Sms { body } => body,
        other => {
            return Err(ProviderError::new(
                ErrorClass::ProviderConfig,
                None,
                None,
                &format!("SMS provider got {} content", content_channel(other)),
            ));
        }
    };
    let Some(to) = &message.recipient.phone else {
        return Err(ProviderError::new(
            ErrorClass::PermanentRecipient,
            None,
            None,
            "the recipient has no phone number",
        ));
    };
    if body.is_empty() {
        // Twilio would answer 400 (21602), Vonage status 2: never sendable as rendered.
        return Err(ProviderError::new(
            ErrorClass::PermanentRecipient,
            None,
            None,
            "the SMS body is empty",
        ));
    }
    Ok((body, to))
}

/// The channel a content value belongs to, for error messages.
pub(crate) fn content_channel(content: &Content) -> Channel {
    match content {
        Content::Email { .. } => Channel::Email,
        Content::Sms { .. } => Channel::Sms,
        Content::Push { .. } => Channel::Push,
        Content::InApp { .. } => Channel::InApp,
        Content::Chat { .. } => Channel::Chat,
    }
}

impl<I> fmt::Debug for InAppProvider<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InAppProvider").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<I: Inbox> Provider for InAppProvider<I> {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::InApp
    }

    fn send<'a>(&'a self, message: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.store(message))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use futures::executor::block_on;
    use steps::model::{Attempt, Category, NotificationId, Recipient, RecipientId, TenantId};
    use workflows::ports::StoreError;

    use super::*;

    /// Inbox entries per tenant and recipient, oldest first.
    type Entries = BTreeMap<(TenantId, RecipientId), Vec<InboxItem>>;

    /// An inbox in memory, optionally failing every call; clones share the entries, like the
    /// storage crate's handles.
    #[derive(Default, Clone)]
    struct MemoryInbox {
        items: Arc<Mutex<Entries>>,
        fail: bool,
    }

    impl Inbox for MemoryInbox {
        async fn inbox_append(
            &self,
            tenant: &TenantId,
            recipient: &RecipientId,
            item: &InboxItem,
        ) -> Result<(), StoreError> {
            if self.fail {
                return Err(StoreError::Unavailable("connection refused".into()));
            }
            let mut items =
                self.items.lock().map_err(|_| StoreError::Corrupt("poisoned".into()))?;
            let list = items.entry((tenant.clone(), recipient.clone())).or_default();
            if !list.iter().any(|i| i.notification_id == item.notification_id) {
                list.push(item.clone());
            }
            Ok(())
        }

        async fn inbox_list(
            &self,
            tenant: &TenantId,
            recipient: &RecipientId,
            limit: usize,
        ) -> Result<Vec<InboxItem>, StoreError> {
            let items = self.items.lock().map_err(|_| StoreError::Corrupt("poisoned".into()))?;
            let list = items.get(&(tenant.clone(), recipient.clone())).cloned().unwrap_or_default();
            Ok(list.into_iter().rev().take(limit).collect())
        }
    }

    struct FixedClock(u64);

    impl Clock for FixedClock {
        fn now_ms(&self) -> u64 {
            self.0
        }
    }

    fn id<T>(make: fn(String) -> Result<T, steps::model::IdError>, s: &str) -> T {
        make(s.to_owned()).expect("valid id")
    }

    fn message(content: Content) -> Outbound {
        Outbound {
            tenant: id(TenantId::new, "acme"),
            notification_id: id(NotificationId::new, "n_01"),
            attempt: Attempt::FIRST,
            idempotency_key: "n_01:in_app:1".into(),
            recipient: Recipient {
                id: id(RecipientId::new, "user-1"),
                email: None,
                phone: None,
                opt_out: vec![],
            },
            category: id(Category::new, "order_updates"),
            content,
            devices: vec![],
        }
    }

    fn check(inbox: MemoryInbox, content: Content) -> (SendOutcome, MemoryInbox) {
        let provider = InAppProvider::with_clock(
            id(ProviderName::new, "inapp"),
            inbox.clone(),
            Arc::new(FixedClock(42)),
        );
        (block_on(provider.send(&message(content))), inbox)
    }

    fn in_app() -> Content {
        Content::InApp {
            title: "Shipped".into(),
            body: "Your order is on its way.".into(),
            action: Some("myapp://orders/1".into()),
        }
    }

    #[test]
    fn stores_the_entry_and_reports_delivery() {
        let (outcome, inbox) = check(MemoryInbox::default(), in_app());
        assert_eq!(
            outcome,
            SendOutcome::Accepted { provider_message_id: Some("n_01".into()), delivered: true }
        );
        let items = block_on(inbox.inbox_list(
            &id(TenantId::new, "acme"),
            &id(RecipientId::new, "user-1"),
            10,
        ))
        .expect("listed");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].title, "Shipped");
        assert_eq!(items[0].body, "Your order is on its way.");
        assert_eq!(items[0].at_ms, 42);
        assert_eq!(items[0].category.as_str(), "order_updates");
        assert_eq!(items[0].action.as_deref(), Some("myapp://orders/1"));
        assert!(!items[0].read);
    }

    #[test]
    fn a_second_send_of_the_same_notification_stores_nothing_new() {
        let inbox = MemoryInbox::default();
        let provider = InAppProvider::with_clock(
            id(ProviderName::new, "inapp"),
            inbox.clone(),
            Arc::new(FixedClock(1)),
        );
        let m = message(in_app());
        for _ in 0..2 {
            assert!(matches!(block_on(provider.send(&m)), SendOutcome::Accepted { .. }));
        }
        let items = block_on(inbox.inbox_list(&m.tenant, &m.recipient.id, 10)).expect("listed");
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn a_store_error_is_retryable() {
        let (outcome, _) = check(MemoryInbox { fail: true, ..Default::default() }, in_app());
        let SendOutcome::Failed(error) = outcome else { panic!("expected a failure: {outcome:?}") };
        assert_eq!(error.class, ErrorClass::RETRYABLE);
        assert!(error.message.contains("inbox store failed"), "{}", error.message);
    }

    #[test]
    fn other_content_is_a_configuration_error() {
        let (outcome, inbox) = check(MemoryInbox::default(), Content::Sms { body: "hi".into() });
        let SendOutcome::Failed(error) = outcome else { panic!("expected a failure: {outcome:?}") };
        assert_eq!(error.class, ErrorClass::ProviderConfig);
        assert_eq!(error.message, "in-app provider got sms content");
        assert!(inbox.items.lock().expect("lock").is_empty());
    }

    #[test]
    fn debug_shows_the_name_only() {
        let provider = InAppProvider::new(id(ProviderName::new, "inapp"), MemoryInbox::default());
        assert_eq!(format!("{provider:?}"), "InAppProvider { name: ProviderName(\"inapp\"), .. }");
    }

    #[test]
    fn new_stamps_entries_with_the_system_clock() {
        let inbox = MemoryInbox::default();
        let provider = InAppProvider::new(id(ProviderName::new, "inapp"), inbox.clone());
        let m = message(in_app());
        assert!(matches!(block_on(provider.send(&m)), SendOutcome::Accepted { .. }));
        let items = block_on(inbox.inbox_list(&m.tenant, &m.recipient.id, 1)).expect("listed");
        // 2020-09-13 in ms: any real clock is past it, a zero or seconds-based stamp is not.
        assert!(items[0].at_ms > 1_600_000_000_000, "{}", items[0].at_ms);
    }
}
