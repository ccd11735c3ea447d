//! The campaign endpoints: create a campaign to a segment, append recipients to a draft, start,
//! cancel, read its progress, list.
//!
//! A segment is either explicit recipient ids, in pages of at most
//! [`RECIPIENTS_PER_REQUEST_MAX`] (the first with `POST /v1/campaigns`, `"draft": true` to hold
//! it, the rest with `POST /v1/campaigns/{id}/recipients`, then `POST /v1/campaigns/{id}/start`),
//! or a filter over the recipient directory (`RecipientFilter`). Workers expand it into
//! notifications at the campaign's `rate_per_sec` (`workflows::fanout`), each recipient's
//! addresses taken from their profile in the directory.
//! The POSTs honour `Idempotency-Key` like the notification POST: the same key and body return
//! the first answer (`Idempotent-Replayed: true`), the same key with another body is refused
//! with 422. Start and cancel are idempotent by nature.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use steps::model::{Category, Channel, RecipientId, TemplateId};
use workflows::campaign::{
    Appended, Campaign, CampaignCreated, CampaignId, CampaignSpec, CampaignState, LIST_LIMIT_MAX,
    Moved, Progress, RATE_PER_SEC_DEFAULT, RATE_PER_SEC_MAX, RECIPIENTS_MAX,
    RECIPIENTS_PER_REQUEST_MAX, RecipientFilter, Segment,
};
use workflows::ports::{Campaigns, Clock, Inbox, Store};
use workflows::record::Idempotency;
use workflows::runner::Submission;

use super::{
    ApiError, AppState, fingerprint, idempotency_key, parse, parse_value, precheck, rfc3339, tenant,
};

/// The largest campaign request body: a page of [`RECIPIENTS_PER_REQUEST_MAX`] ids of the
/// longest kind (128 characters) with the template data fits.
pub const BODY_BYTES_MAX: usize = 2 * 1024 * 1024;

/// The campaign routes, with their own body limit (a page of recipients is larger than a
/// notification).
pub fn routes<S, C>() -> Router<AppState<S, C>>
where
    S: Store + Inbox + Campaigns,
    C: Clock,
{
    Router::new()
        .route("/v1/campaigns", post(create::<S, C>).get(list::<S, C>))
        .route("/v1/campaigns/{id}", get(show::<S, C>))
        .route("/v1/campaigns/{id}/recipients", post(append::<S, C>))
        .route("/v1/campaigns/{id}/start", post(start::<S, C>))
        .route("/v1/campaigns/{id}/cancel", post(cancel::<S, C>))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
}

/// A campaign as submitted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    template: TemplateId,
    channel: Channel,
    #[serde(default = "default_category")]
    category: Category,
    #[serde(default)]
    data: serde_json::Map<String, serde_json::Value>,
    segment: SegmentBody,
    #[serde(default)]
    rate_per_sec: Option<u32>,
    /// Hold it: recipients may be appended until `POST .../start`.
    #[serde(default)]
    draft: bool,
}

/// Who a campaign goes to, as submitted: one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentBody {
    /// The first page of recipient ids.
    #[serde(default)]
    recipients: Option<Vec<RecipientId>>,
    /// Everyone in the directory the filter matches.
    #[serde(default)]
    filter: Option<RecipientFilter>,
}

/// A page of recipients appended to a draft.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendBody {
    recipients: Vec<RecipientId>,
}

fn default_category() -> Category {
    Category::new("marketing").unwrap_or_else(|_| unreachable!("a valid literal id"))
}

fn body(raw: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    raw.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(_) => ApiError::TooLarge { limit: BODY_BYTES_MAX },
        other => ApiError::BadRequest { field: "body".into(), message: other.body_text() },
    })
}

fn campaign_id(raw: &str) -> Result<CampaignId, ApiError> {
    CampaignId::new(raw).map_err(|_| ApiError::NotFound)
}

fn page_of_recipients(
    field: &str,
    recipients: &[RecipientId],
    empty_ok: bool,
) -> Result<(), ApiError> {
    let min = usize::from(!empty_ok);
    if recipients.len() < min || recipients.len() > RECIPIENTS_PER_REQUEST_MAX {
        return Err(ApiError::BadRequest {
            field: field.into(),
            message: format!(
                "must hold {min} to {RECIPIENTS_PER_REQUEST_MAX} recipient ids per request; \
                 append more with POST /v1/campaigns/{{id}}/recipients while it is a draft"
            ),
        });
    }
    Ok(())
}

fn replayed(mut response: Response) -> Response {
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

fn key_reused(what: &str) -> ApiError {
    ApiError::Unprocessable {
        code: "idempotency_key_reused",
        field: "Idempotency-Key".into(),
        message: format!("this key was already used for {what} with a different request body"),
    }
}

async fn create<S, C>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError>
where
    S: Store + Inbox + Campaigns,
    C: Clock,
{
    let tenant = tenant(&state, &headers).await?;
    let bytes = body(raw)?;
    let key = idempotency_key(&headers)?;
    let value: serde_json::Value = parse(&bytes, "")?;
    let fingerprint = fingerprint(&value);
    let body: CreateBody = parse_value(value, "")?;
    let (segment, recipients) = match (body.segment.recipients, body.segment.filter) {
        (Some(recipients), None) => {
            page_of_recipients("segment.recipients", &recipients, body.draft)?;
            (Segment::Recipients, recipients)
        }
        (None, Some(filter)) => (Segment::Filter { filter }, Vec::new()),
        _ => {
            return Err(ApiError::BadRequest {
                field: "segment".into(),
                message: "must hold either `recipients` (a list of ids) or `filter` (over the \
                          recipient directory)"
                    .into(),
            });
        }
    };
    let rate_per_sec = body.rate_per_sec.unwrap_or(RATE_PER_SEC_DEFAULT);
    if !(1..=RATE_PER_SEC_MAX).contains(&rate_per_sec) {
        return Err(ApiError::BadRequest {
            field: "rate_per_sec".into(),
            message: format!("must be between 1 and {RATE_PER_SEC_MAX} notifications a second"),
        });
    }
    // Every channel goes out in campaigns: email and SMS to the profile's addresses, push to its
    // devices (read at each send), in-app to the inbox, chat to its providers' endpoints.
    // The data is the same for every recipient: if it renders once, it renders for all.
    let check = Submission {
        recipient: steps::model::Recipient {
            id: RecipientId::new("campaign-check").unwrap_or_else(|_| unreachable!()),
            email: None,
            phone: None,
            opt_out: Vec::new(),
        },
        channel: body.channel,
        template: body.template.clone(),
        data: body.data.clone(),
        category: body.category.clone(),
        locale: None,
        correlation: Default::default(),
    };
    precheck(&state.runner, &tenant, &check, "").await?;

    let now_ms = state.runner.clock().now_ms();
    // Time-ordered by the clock the campaign is stamped with, so listings read newest first.
    let ulid = ulid::Ulid::from_parts(now_ms, rand::random::<u128>()).to_string();
    let id = storage::keys::campaigns::new_campaign_id(&tenant, key.as_deref(), &ulid);
    let campaign_state = if body.draft { CampaignState::Draft } else { CampaignState::Expanding };
    let campaign = Campaign {
        tenant: tenant.clone(),
        id: id.clone(),
        spec: CampaignSpec {
            template: body.template,
            channel: body.channel,
            category: body.category,
            data: body.data,
            segment,
            rate_per_sec,
        },
        state: campaign_state,
        recipients: recipients.len() as u64,
        position: 0,
        cursor: String::new(),
        rejected: 0,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        started_at_ms: (!body.draft).then_some(now_ms),
        finished_at_ms: None,
        cancelled_at_ms: None,
    };
    let idempotency = key.map(|key| Idempotency { key, fingerprint });
    let store = state.runner.store();
    match store.campaign_create(&campaign, &recipients, idempotency.as_ref()).await? {
        CampaignCreated::New => {
            tracing::info!(
                campaign = %id,
                %tenant,
                recipients = campaign.recipients,
                state = %campaign.state,
                "Campaign accepted."
            );
            let view = json!({
                "id": id,
                "created": true,
                "state": campaign.state,
                "recipients": campaign.recipients,
            });
            Ok((StatusCode::ACCEPTED, axum::Json(view)).into_response())
        }
        CampaignCreated::Existing { id, same_request: true } => {
            let earlier = store.campaign(&tenant, &id).await?.ok_or(ApiError::NotFound)?;
            let view = json!({
                "id": id,
                "created": false,
                "state": earlier.state,
                "recipients": earlier.recipients,
            });
            Ok(replayed((StatusCode::ACCEPTED, axum::Json(view)).into_response()))
        }
        CampaignCreated::Existing { id, same_request: false } => {
            Err(key_reused(&format!("campaign {id}")))
        }
    }
}

async fn append<S, C>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError>
where
    S: Store + Inbox + Campaigns,
    C: Clock,
{
    let tenant = tenant(&state, &headers).await?;
    let id = campaign_id(&id)?;
    let bytes = body(raw)?;
    let key = idempotency_key(&headers)?;
    let value: serde_json::Value = parse(&bytes, "")?;
    let fingerprint = fingerprint(&value);
    let body: AppendBody = parse_value(value, "")?;
    page_of_recipients("recipients", &body.recipients, false)?;
    let idempotency = key.map(|key| Idempotency { key, fingerprint });
    let now_ms = state.runner.clock().now_ms();
    let store = state.runner.store();
    // The segment never changes: a filter campaign takes no list of ids.
    let campaign = store.campaign(&tenant, &id).await?.ok_or(ApiError::NotFound)?;
    if campaign.spec.segment != Segment::Recipients {
        return Err(ApiError::Conflict {
            message: format!(
                "campaign {id}'s segment is a filter over the recipient directory; it takes no \
                 list of recipients"
            ),
        });
    }
    let appended =
        store.campaign_append(&tenant, &id, &body.recipients, idempotency.as_ref(), now_ms).await?;
    let view = |recipients: u64| json!({ "id": id, "recipients": recipients });
    match appended {
        Appended::Done { recipients } => Ok(axum::Json(view(recipients)).into_response()),
        Appended::Replayed { recipients, same_request: true } => {
            Ok(replayed(axum::Json(view(recipients)).into_response()))
        }
        Appended::Replayed { same_request: false, .. } => {
            Err(key_reused(&format!("an append to campaign {id}")))
        }
        Appended::Refused { state } => Err(ApiError::Conflict {
            message: format!(
                "campaign {id} is {state}: recipients can only be appended to a draft"
            ),
        }),
        Appended::TooMany { recipients } => Err(ApiError::Unprocessable {
            code: "campaign_too_large",
            field: "recipients".into(),
            message: format!(
                "campaign {id} has {recipients} recipients; a campaign holds at most \
                 {RECIPIENTS_MAX}"
            ),
        }),
        Appended::NotFound => Err(ApiError::NotFound),
    }
}

async fn start<S, C>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError>
where
    S: Store + Inbox + Campaigns,
    C: Clock,
{
    let tenant = tenant(&state, &headers).await?;
    let id = campaign_id(&id)?;
    let now_ms = state.runner.clock().now_ms();
    match state.runner.store().campaign_start(&tenant, &id, now_ms).await? {
        Moved::To { state } => {
            tracing::info!(campaign = %id, %tenant, "Campaign started.");
            Ok(axum::Json(json!({ "id": id, "state": state })).into_response())
        }
        Moved::Refused { state } => Err(ApiError::Conflict {
            message: format!("campaign {id} is {state}; only a draft can be started"),
        }),
        Moved::NotFound => Err(ApiError::NotFound),
    }
}

async fn cancel<S, C>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError>
where
    S: Store + Inbox + Campaigns,
    C: Clock,
{
    let tenant = tenant(&state, &headers).await?;
    let id = campaign_id(&id)?;
    let store = state.runner.store();
    let campaign = store.campaign(&tenant, &id).await?.ok_or(ApiError::NotFound)?;
    if campaign.state == CampaignState::Expanded {
        let counts = store.campaign_counts(&tenant, &id).await?;
        if Progress::of(&campaign, &counts).in_flight == 0 {
            return Err(ApiError::Conflict {
                message: format!("campaign {id} has completed: nothing is left to cancel"),
            });
        }
    }
    let now_ms = state.runner.clock().now_ms();
    match store.campaign_cancel(&tenant, &id, now_ms).await? {
        Moved::To { state } => {
            tracing::info!(campaign = %id, %tenant, %state, "Campaign cancelled.");
            Ok(axum::Json(json!({ "id": id, "state": state })).into_response())
        }
        Moved::Refused { state } => Err(ApiError::Conflict {
            message: format!("campaign {id} is {state} and can no longer be cancelled"),
        }),
        Moved::NotFound => Err(ApiError::NotFound),
    }
}

fn summary(campaign: &Campaign) -> serde_json::Value {
    json!({
        "id": campaign.id,
        "state": campaign.state,
        "template": campaign.spec.template,
        "channel": campaign.spec.channel,
        "category": campaign.spec.category,
        "segment": campaign.spec.segment,
        "rate_per_sec": campaign.spec.rate_per_sec,
        "recipients": campaign.recipients,
        "position": campaign.position,
        "created_at": rfc3339(campaign.created_at_ms),
        "updated_at": rfc3339(campaign.updated_at_ms),
        "started_at": campaign.started_at_ms.map(rfc3339),
        "finished_at": campaign.finished_at_ms.map(rfc3339),
        "cancelled_at": campaign.cancelled_at_ms.map(rfc3339),
    })
}

async fn show<S, C>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError>
where
    S: Store + Inbox + Campaigns,
    C: Clock,
{
    let tenant = tenant(&state, &headers).await?;
    let id = campaign_id(&id)?;
    let store = state.runner.store();
    let campaign = store.campaign(&tenant, &id).await?.ok_or(ApiError::NotFound)?;
    let counts = store.campaign_counts(&tenant, &id).await?;
    let progress = Progress::of(&campaign, &counts);
    let mut view = summary(&campaign);
    view["state"] = json!(progress.state);
    view["progress"] = json!(progress);
    view["counts"] = json!(
        counts
            .0
            .iter()
            .filter(|(_, n)| **n != 0)
            .collect::<Vec<_>>()
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    );
    Ok(axum::Json(view).into_response())
}

/// `?limit=&after=` for the listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<usize>,
    after: Option<String>,
}

async fn list<S, C>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError>
where
    S: Store + Inbox + Campaigns,
    C: Clock,
{
    let tenant = tenant(&state, &headers).await?;
    let Query(params) = params
        .map_err(|e| ApiError::BadRequest { field: "query".into(), message: e.body_text() })?;
    let limit = params.limit.unwrap_or(20);
    if limit == 0 || limit > LIST_LIMIT_MAX {
        return Err(ApiError::BadRequest {
            field: "limit".into(),
            message: format!("must be between 1 and {LIST_LIMIT_MAX}"),
        });
    }
    let after = match params.after.as_deref() {
        None => None,
        Some(raw) => Some(CampaignId::new(raw).map_err(|e| ApiError::BadRequest {
            field: "after".into(),
            message: format!("must be a campaign id: {e}"),
        })?),
    };
    let campaigns = state.runner.store().campaigns(&tenant, after.as_ref(), limit).await?;
    let next = (campaigns.len() == limit).then(|| campaigns.last().map(|c| c.id.clone()));
    let items: Vec<_> = campaigns.iter().map(summary).collect();
    Ok(axum::Json(json!({ "campaigns": items, "next": next.flatten() })).into_response())
}
