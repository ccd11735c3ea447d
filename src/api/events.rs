//! `GET /v1/events`: the tenant's committed transitions, live, as Server-Sent Events (what
//! `courant tail` shows).
//!
//! Each transition is an `event: transition` whose data is [`view`]'s JSON: ids, states, cause,
//! provider, attempt, channel, category and note, never an address or content. Query filters
//! `id`, `channel`, `state` (the state moved to), `provider` and `category` narrow it; each is
//! checked, and a bad one is a 400 naming it. A comment every 15 s keeps proxies from closing an
//! idle stream.
//!
//! The stream is live only: no history, no resume (`courant history` has the record). A client
//! that reads slower than transitions come is not dropped: the events that do not fit its buffer
//! are skipped, and it gets an `event: lagged` with `{"missed": n}` where they were. The stream
//! ends when the server's feed breaks (the client reconnects). At most
//! [`Limits::event_streams_max`](super::Limits::event_streams_max) streams are open per process;
//! beyond that, 503.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{FutureExt, Stream};
use serde::Deserialize;
use serde_json::{Value, json};
use steps::model::{Category, Channel, NotificationId, ProviderName, TenantId};
use workflows::machine::StateKind;
use workflows::ports::{Clock, Inbox, Store};
use workflows::transitions::{Transition, TransitionFeed};

use super::hub::{
    Delivery, Hub, HubLimits, Keyed, Refused, StreamsEnd, Subscription, WhenFull, sse,
};
use super::{ApiError, AppState, rfc3339, tenant};

impl Keyed for Transition {
    type Key = TenantId;

    fn key(&self) -> TenantId {
        self.tenant.clone()
    }
}

/// Transitions a stream may have waiting before it skips: a second or two of a busy tenant.
const BUFFER: usize = 256;

/// The route, merged into the API's router, with its fan-out [`Hub`] (one per router: the
/// store's feed is opened by the first stream).
pub(super) fn routes<S, C>(state: &AppState<S, C>) -> Router<AppState<S, C>>
where
    S: Store + Inbox + TransitionFeed,
    C: Clock,
{
    Router::new().route("/v1/events", get(stream::<S, C>)).layer(Extension(hub(state)))
}

/// The live feed's fan-out: at most `Limits::event_streams_max` streams, any tenant's.
fn hub<S: Store + TransitionFeed, C: Clock>(state: &AppState<S, C>) -> Hub<Transition> {
    let streams_max = state.limits.event_streams_max;
    let limits = HubLimits {
        per_key_max: streams_max,
        total_max: streams_max,
        buffer: BUFFER,
        when_full: WhenFull::Skip,
        ..HubLimits::default()
    };
    let runner = state.runner.clone();
    let open = Arc::new(move || {
        let runner = runner.clone();
        async move { runner.store().transition_feed().await }.boxed()
    });
    Hub::new("transitions", open, limits)
}

/// A transition as the API shows it.
pub fn view(transition: &Transition) -> Value {
    json!({
        "id": transition.id,
        "at": rfc3339(transition.at_ms),
        "version": transition.version,
        "from": transition.from,
        "to": transition.to,
        "cause": transition.cause.to_string(),
        "provider": transition.provider,
        "attempt": transition.attempt,
        "channel": transition.channel,
        "category": transition.category,
        "note": transition.note,
    })
}

/// `?id=&channel=&state=&provider=&category=`, as given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    id: Option<String>,
    channel: Option<String>,
    state: Option<String>,
    provider: Option<String>,
    category: Option<String>,
}

/// Which transitions a stream shows: every one whose fields equal those given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Only this notification's.
    pub id: Option<NotificationId>,
    /// Only on this channel.
    pub channel: Option<Channel>,
    /// Only those moving to this state.
    pub state: Option<StateKind>,
    /// Only those about this provider.
    pub provider: Option<ProviderName>,
    /// Only this category's.
    pub category: Option<Category>,
}

fn bad(field: &str, message: &str) -> ApiError {
    ApiError::BadRequest { field: field.into(), message: message.into() }
}

impl Filter {
    fn parse(params: Params) -> Result<Self, ApiError> {
        let id = params.id.map(NotificationId::new).transpose();
        let channel = params.channel.map(|c| Channel::parse(&c).ok_or(())).transpose();
        let state = params.state.map(|s| StateKind::parse(&s).ok_or(())).transpose();
        let provider = params.provider.map(ProviderName::new).transpose();
        let category = params.category.map(Category::new).transpose();
        let states = StateKind::ALL.map(StateKind::as_str).join(", ");
        Ok(Self {
            id: id.map_err(|_| bad("id", "must be a notification id"))?,
            channel: channel
                .map_err(|_| bad("channel", "must be email, sms, push, chat or in_app"))?,
            state: state.map_err(|_| bad("state", &format!("must be one of {states}")))?,
            provider: provider.map_err(|_| bad("provider", "must be a provider name"))?,
            category: category.map_err(|_| bad("category", "must be a category id"))?,
        })
    }

    /// Whether the stream shows `transition`.
    pub fn wants(&self, transition: &Transition) -> bool {
        fn holds<T: PartialEq>(wanted: Option<&T>, actual: Option<&T>) -> bool {
            wanted.is_none_or(|wanted| actual == Some(wanted))
        }
        holds(self.id.as_ref(), Some(&transition.id))
            && holds(self.channel.as_ref(), Some(&transition.channel))
            && holds(self.state.as_ref(), Some(&transition.to))
            && holds(self.provider.as_ref(), transition.provider.as_ref())
            && holds(self.category.as_ref(), Some(&transition.category))
    }
}

/// A refused stream: 503 either way (the process is at its cap, or the feed is down).
fn refused(why: Refused) -> Response {
    let code = match why {
        Refused::Unavailable => "unavailable",
        Refused::PerKey(_) | Refused::Total(_) => "too_many_streams",
    };
    let body = json!({ "error": { "code": code, "message": why.to_string() } });
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

fn live(subscription: Subscription<Transition>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(subscription, |mut subscription| async move {
        let event = match subscription.events.recv().await? {
            Delivery::Event(transition) => {
                Event::default().event("transition").data(view(&transition).to_string())
            }
            Delivery::Missed(missed) => {
                Event::default().event("lagged").data(json!({ "missed": missed }).to_string())
            }
        };
        Some((Ok(event), subscription))
    })
}

async fn stream<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    Extension(hub): Extension<Hub<Transition>>,
    end: Option<Extension<StreamsEnd>>,
    headers: HeaderMap,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let Query(params) = params.map_err(|e| bad("query", &e.body_text()))?;
    let filter = Filter::parse(params)?;
    let subscription = match hub.subscribe(tenant.clone(), Box::new(move |t| filter.wants(t))).await
    {
        Ok(subscription) => subscription,
        Err(why) => return Ok(refused(why)),
    };
    tracing::debug!(%tenant, "Event stream opened.");
    Ok(sse(live(subscription), end))
}

#[cfg(test)]
mod tests {
    use storage::conformance::{first, record};

    use super::*;

    /// The parameters of a query string, as the handler gets them.
    fn params(query: &str) -> Params {
        let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
        Query::<Params>::try_from_uri(&uri).unwrap().0
    }

    fn field(error: ApiError) -> String {
        match error {
            ApiError::BadRequest { field, .. } => field,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn filters_are_checked_and_name_the_bad_field() {
        for (name, value) in [
            ("id", "no%20spaces"),
            ("channel", "fax"),
            ("state", "done"),
            ("provider", "a%2Fb"),
            ("category", "x%20y"),
        ] {
            let error = Filter::parse(params(&format!("{name}={value}"))).unwrap_err();
            assert_eq!(field(error), name);
        }
        let filter = Filter::parse(params("channel=email&state=sent")).unwrap();
        assert_eq!(filter.channel, Some(Channel::Email));
        assert_eq!(filter.state, Some(StateKind::Sent));
    }

    #[test]
    fn a_filter_keeps_only_matching_transitions() {
        let acme = TenantId::new("acme").unwrap();
        let id = storage::keys::new_notification_id(&acme, None, "01HZZZZZZZZZZZZZZZZZ000001");
        let received = Transition::new(&record(&acme, &id, 1, None), &first(1));
        assert!(Filter::default().wants(&received));
        let email = Filter { channel: Some(Channel::Email), ..Filter::default() };
        assert!(email.wants(&received), "the fixture asks for email");
        let sms = Filter { channel: Some(Channel::Sms), ..Filter::default() };
        assert!(!sms.wants(&received));
        let sent = Filter { state: Some(StateKind::Sent), ..Filter::default() };
        assert!(!sent.wants(&received));
        let provider = Filter { provider: ProviderName::new("twilio").ok(), ..Filter::default() };
        assert!(!provider.wants(&received), "a received transition has no provider");
        let mine = Filter { id: Some(id), ..Filter::default() };
        assert!(mine.wants(&received));
    }

    #[test]
    fn the_view_holds_ids_and_no_address() {
        let acme = TenantId::new("acme").unwrap();
        let id = storage::keys::new_notification_id(&acme, None, "01HZZZZZZZZZZZZZZZZZ000001");
        let view = view(&Transition::new(&record(&acme, &id, 1, None), &first(1)));
        assert_eq!(view["to"], "received");
        assert_eq!(view["cause"], "api submit");
        assert_eq!(view["channel"], "email");
        assert!(!view.to_string().contains("bob@example.com"), "{view}");
    }
}
