//! Conformance checks of the live transition feed ([`workflows::transitions`]).

use std::time::Duration;

use futures::StreamExt;
use workflows::transitions::{Transition, TransitionFeed};

use super::{Conformance, entry, first, id, record, sent, tenant};

/// What the transition checks need of a store.
pub trait TransitionConformance: Conformance + TransitionFeed {}

impl<S: Conformance + TransitionFeed> TransitionConformance for S {}

/// Expands to one `#[tokio::test]` per transition-feed check. `$fresh` is as for
/// `conformance_tests!`.
#[macro_export]
macro_rules! transition_conformance_tests {
    ($fresh:path) => {
        $crate::transition_conformance_tests!(@each $fresh;
            transition_feed_delivers_each_published_transition_in_order_to_every_subscriber,
        );
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $fresh().await;
                $crate::conformance::transitions::$name(&store).await;
            }
        )*
    };
}

/// Every subscriber open when a batch is published sees each of its transitions once, in order,
/// whatever the tenant; one opened later sees only what comes after.
pub async fn transition_feed_delivers_each_published_transition_in_order_to_every_subscriber<
    S: TransitionConformance,
>(
    store: &S,
) {
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let one = record(&acme, &id(&acme, 1), 1_000, None);
    let other = record(&globex, &id(&globex, 2), 1_000, None);
    let batch = vec![
        Transition::new(&one, &first(1_000)),
        Transition::new(&other, &first(1_001)),
        Transition::new(&one, &entry(2, 1_002, &sent())),
    ];
    let mut feeds = [
        store.transition_feed().await.expect("subscribe"),
        store.transition_feed().await.expect("subscribe"),
    ];
    store.publish_transitions(&batch).await.expect("publish");
    store.publish_transitions(&[]).await.expect("an empty batch publishes nothing");
    for feed in &mut feeds {
        for expected in &batch {
            let got = tokio::time::timeout(Duration::from_secs(5), feed.next()).await;
            let got = got.expect("a transition within 5 s").expect("the feed is open");
            assert_eq!(&got, expected);
        }
    }
    let mut late = store.transition_feed().await.expect("subscribe");
    let after = vec![Transition::new(&one, &entry(3, 1_003, &sent()))];
    store.publish_transitions(&after).await.expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(5), late.next()).await;
    assert_eq!(got.expect("a transition within 5 s").as_ref(), after.first());
    assert_eq!(batch[2].provider.as_ref().map(|p| p.as_str()), Some("sendgrid"));
}
