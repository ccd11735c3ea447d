//! The Redis transition feed: [`TransitionFeed`] for [`RedisStore`]. Each transition is PUBLISHed
//! as JSON on its tenant's channel ([`transition_events`]); an API process PSUBSCRIBEs to every
//! tenant's at once ([`TRANSITION_EVENTS_PATTERN`]) and fans out by tenant.

use futures::stream::BoxStream;
use workflows::ports::StoreError;
use workflows::transitions::{PUBLISH_BATCH_MAX, Transition, TransitionFeed};

use super::RedisStore;
use super::codec::{from_json, to_json};
use crate::keys::{TRANSITION_EVENTS_PATTERN, transition_events};

impl TransitionFeed for RedisStore {
    async fn publish_transitions(&self, transitions: &[Transition]) -> Result<(), StoreError> {
        assert!(transitions.len() <= PUBLISH_BATCH_MAX, "a publish batch is bounded");
        if transitions.is_empty() {
            return Ok(());
        }
        // One pipeline, one round trip; PUBLISH keeps their order on each channel.
        let mut pipe = redis::pipe();
        for transition in transitions {
            pipe.publish(transition_events(&transition.tenant), to_json(transition)?).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(|e| self.error("publish_transitions", &e))
    }

    async fn transition_feed(&self) -> Result<BoxStream<'static, Transition>, StoreError> {
        self.pubsub_feed(TRANSITION_EVENTS_PATTERN, "transition", from_json).await
    }
}
