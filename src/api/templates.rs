//! The template registry's endpoints, per tenant:
//!
//! - `POST /v1/templates` `{"id", "default_locale", "locales": {"en": {"sms.body": "…"}}, "publish"?}`
//!   creates a template with version 1, published unless `"publish": false`;
//! - `POST /v1/templates/{id}/versions` `{"default_locale", "locales"}` adds a draft version;
//! - `POST /v1/templates/{id}/versions/{version}/publish` makes new notifications pin it;
//! - `GET /v1/templates?limit=&after=` lists the tenant's templates in id order (and names the
//!   built-ins);
//! - `GET /v1/templates/{id}` shows a template, its versions and which one is published;
//! - `GET /v1/templates/{id}/versions/{version}` shows a version's parts;
//! - `POST /v1/templates/{id}/preview` `{"channel", "data", "locale"?, "version"?}` renders without
//!   sending: the parts, the locale used, and for SMS the encoding and segment count.
//!
//! Content is checked before anything is written: every part parses with tera 2 and names only
//! tera's own syntax, each locale's parts make whole channels, sizes and counts are within the
//! policy (`policy.templates`). A bad template is a 422 whose `field` is the part
//! (`locales.fr.sms.body`) and whose message carries tera's explanation. The built-in templates
//! (the templates directory) can be read and previewed here but not changed; a tenant's template
//! with the same id takes their place for that tenant.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use steps::locale::Locale;
use steps::model::{Channel, TemplateId, TemplateRef, TenantId};
use steps::render::{CompiledTemplate, Part, RenderError, Rendered, TemplateContent};
use workflows::ports::{
    Clock, Inbox, Store, TemplateInfo, TemplateSummary, TemplateWrite, VersionSummary,
};
use workflows::templates::TemplateError;

use super::{ApiError, AppState, body, parse, rfc3339, template_error, tenant};

/// `POST /v1/templates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    id: TemplateId,
    default_locale: Locale,
    locales: BTreeMap<Locale, BTreeMap<Part, String>>,
    #[serde(default = "publish_default")]
    publish: bool,
}

fn publish_default() -> bool {
    true
}

/// A version in a preview: a registry version's number, or a built-in's hash.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum VersionParam {
    Number(u32),
    Text(String),
}

/// `POST /v1/templates/{id}/preview`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    channel: Channel,
    #[serde(default)]
    data: serde_json::Map<String, Value>,
    locale: Option<Locale>,
    version: Option<VersionParam>,
}

/// `?limit=&after=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    limit: Option<usize>,
    after: Option<String>,
}

fn template_id(raw: String) -> Result<TemplateId, ApiError> {
    TemplateId::new(raw).map_err(|_| ApiError::NotFound)
}

fn version_number(raw: &str) -> Result<u32, ApiError> {
    raw.parse::<u32>().ok().filter(|v| *v > 0).ok_or(ApiError::NotFound)
}

/// A registry error: 422 for content that does not compile, 503 for the store.
fn registry_error(error: TemplateError) -> ApiError {
    match error {
        TemplateError::Render(RenderError::Invalid { id, field, message }) => {
            let message = RenderError::Invalid { id, field: field.clone(), message }.to_string();
            ApiError::Unprocessable { code: "template_invalid", field, message }
        }
        TemplateError::Render(other) => template_error("", other),
        TemplateError::Store(e) => e.into(),
        TemplateError::NoRegistry => {
            tracing::error!("A template registry request reached a runner without a registry.");
            ApiError::Unavailable
        }
    }
}

fn version_view(v: &VersionSummary, published: Option<u32>) -> Value {
    json!({
        "version": v.version,
        "published": published == Some(v.version),
        "created_at": rfc3339(v.created_at_ms),
        "default_locale": v.default_locale,
        "locales": v.locales,
        "channels": v.channels,
    })
}

fn summary_view(t: &TemplateSummary) -> Value {
    json!({
        "id": t.id,
        "source": "registry",
        "published": t.published,
        "latest": t.latest,
        "created_at": rfc3339(t.created_at_ms),
        "updated_at": rfc3339(t.updated_at_ms),
    })
}

fn info_view(info: &TemplateInfo) -> Value {
    let mut view = summary_view(&info.summary);
    let published = info.summary.published;
    view["versions"] = info.versions.iter().map(|v| version_view(v, published)).collect();
    view
}

fn builtin_view(t: &CompiledTemplate) -> Value {
    let content = t.content();
    json!({
        "id": t.id(),
        "source": "builtin",
        "published": t.version(),
        "versions": [{
            "version": t.version(),
            "published": true,
            "default_locale": content.default_locale,
            "locales": content.locales.keys().collect::<Vec<_>>(),
            "channels": content.channels(),
        }],
    })
}

/// A version as the API shows it: a registry version's number, or a built-in's hash.
fn version_json(compiled: &CompiledTemplate) -> Value {
    match compiled.pin().registry_version() {
        Some(n) => json!(n),
        None => json!(compiled.version()),
    }
}

fn write_outcome(id: &TemplateId, write: TemplateWrite) -> Result<TemplateInfo, ApiError> {
    match write {
        TemplateWrite::Done(info) => Ok(info),
        TemplateWrite::Exists => Err(ApiError::Conflict {
            message: format!(
                "template '{id}' already exists; add a version with POST /v1/templates/{id}/versions"
            ),
        }),
        TemplateWrite::NotFound | TemplateWrite::NoSuchVersion => Err(ApiError::NotFound),
        TemplateWrite::Full { limit } => Err(ApiError::Unprocessable {
            code: "limit_reached",
            field: "id".into(),
            message: format!("the limit of {limit} is reached"),
        }),
    }
}

fn created(location: String, view: Value) -> Response {
    let mut response = (StatusCode::CREATED, axum::Json(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn now_ms<S: Store + Inbox, C: Clock>(state: &AppState<S, C>) -> u64 {
    state.runner.clock().now_ms()
}

pub(super) async fn create<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let bytes = body(&state, raw)?;
    let request: CreateBody = parse(&bytes, "")?;
    let id = request.id;
    let content =
        TemplateContent { default_locale: request.default_locale, locales: request.locales };
    let policy = state.runner.policy().templates;
    let write = state
        .runner
        .templates()
        .create(&tenant, &id, content, request.publish, now_ms(&state), &policy)
        .await
        .map_err(registry_error)?;
    let info = match write {
        TemplateWrite::Full { limit } => {
            return Err(ApiError::Unprocessable {
                code: "limit_reached",
                field: "id".into(),
                message: format!(
                    "this tenant has {limit} templates, the most policy.templates.templates_per_tenant_max allows"
                ),
            });
        }
        other => write_outcome(&id, other)?,
    };
    tracing::info!(%tenant, template = %id, "Template created.");
    Ok(created(format!("/v1/templates/{id}"), info_view(&info)))
}

pub(super) async fn add_version<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let id = template_id(id)?;
    let bytes = body(&state, raw)?;
    let content: TemplateContent = parse(&bytes, "")?;
    let policy = state.runner.policy().templates;
    let write = state
        .runner
        .templates()
        .add_version(&tenant, &id, content, now_ms(&state), &policy)
        .await
        .map_err(registry_error)?;
    let info = match write {
        TemplateWrite::Full { limit } => {
            return Err(ApiError::Unprocessable {
                code: "limit_reached",
                field: "version".into(),
                message: format!(
                    "template '{id}' has {limit} versions, the most policy.templates.versions_per_template_max allows; create a new template"
                ),
            });
        }
        other => write_outcome(&id, other)?,
    };
    let Some(added) = info.versions.last() else {
        return Err(ApiError::Unavailable);
    };
    tracing::info!(%tenant, template = %id, version = added.version, "Template version added.");
    let mut view = version_view(added, info.summary.published);
    view["id"] = json!(id);
    Ok(created(format!("/v1/templates/{id}/versions/{}", added.version), view))
}

pub(super) async fn publish<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path((id, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let id = template_id(id)?;
    let version = version_number(&version)?;
    let write = state
        .runner
        .templates()
        .publish(&tenant, &id, version, now_ms(&state))
        .await
        .map_err(registry_error)?;
    let info = write_outcome(&id, write)?;
    tracing::info!(%tenant, template = %id, version, "Template version published.");
    Ok(axum::Json(info_view(&info)).into_response())
}

pub(super) async fn list<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let Query(params) = params
        .map_err(|e| ApiError::BadRequest { field: "query".into(), message: e.body_text() })?;
    let limit = super::limit(params.limit)?;
    let after = params
        .after
        .map(TemplateId::new)
        .transpose()
        .map_err(|e| ApiError::BadRequest { field: "after".into(), message: e.to_string() })?;
    let templates = state.runner.templates();
    let registry = templates.registry().map_err(registry_error)?;
    let page = registry.template_list(&tenant, after.as_ref(), limit).await?;
    let next = (page.len() == limit).then(|| page.last().map(|t| t.id.clone())).flatten();
    let builtin: Vec<&TemplateId> = templates.builtin().ids().collect();
    Ok(axum::Json(json!({
        "templates": page.iter().map(summary_view).collect::<Vec<_>>(),
        "next_after": next,
        "builtin": builtin,
    }))
    .into_response())
}

pub(super) async fn show<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let id = template_id(id)?;
    let templates = state.runner.templates();
    let registry = templates.registry().map_err(registry_error)?;
    if let Some(info) = registry.template_info(&tenant, &id).await? {
        return Ok(axum::Json(info_view(&info)).into_response());
    }
    let builtin = templates.builtin().get(&id).ok_or(ApiError::NotFound)?;
    Ok(axum::Json(builtin_view(builtin)).into_response())
}

pub(super) async fn show_version<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path((id, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let id = template_id(id)?;
    let templates = state.runner.templates();
    let registry = templates.registry().map_err(registry_error)?;
    if let Some(published) = registry.template_published(&tenant, &id).await? {
        let version = version_number(&version)?;
        let stored =
            registry.template_version(&tenant, &id, version).await?.ok_or(ApiError::NotFound)?;
        let mut view = version_view(&stored.summary, published);
        view["id"] = json!(id);
        view["locales"] = json!(stored.content.locales);
        return Ok(axum::Json(view).into_response());
    }
    let builtin = templates.builtin().get(&id).ok_or(ApiError::NotFound)?;
    if builtin.version() != version {
        return Err(ApiError::NotFound);
    }
    let content = builtin.content();
    Ok(axum::Json(json!({
        "id": id,
        "version": builtin.version(),
        "published": true,
        "default_locale": content.default_locale,
        "locales": content.locales,
        "channels": content.channels(),
    }))
    .into_response())
}

/// The template a preview renders: the given version, or what a notification would pin now.
async fn preview_template<S: Store + Inbox, C: Clock>(
    state: &AppState<S, C>,
    tenant: &TenantId,
    id: &TemplateId,
    version: Option<VersionParam>,
) -> Result<Arc<CompiledTemplate>, TemplateError> {
    let templates = state.runner.templates();
    match version {
        None => templates.published(tenant, id).await,
        Some(VersionParam::Number(n)) => templates.version(tenant, id, n).await,
        Some(VersionParam::Text(hash)) => {
            templates.pinned(tenant, &TemplateRef { id: id.clone(), version: hash }).await
        }
    }
}

pub(super) async fn preview<S: Store + Inbox, C: Clock>(
    State(state): State<AppState<S, C>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let id = template_id(id)?;
    let bytes = body(&state, raw)?;
    let request: PreviewBody = parse(&bytes, "")?;
    let compiled = match preview_template(&state, &tenant, &id, request.version).await {
        Ok(compiled) => compiled,
        Err(TemplateError::Render(
            RenderError::UnknownTemplate(_)
            | RenderError::UnknownVersion { .. }
            | RenderError::VersionGone { .. },
        )) => return Err(ApiError::NotFound),
        Err(other) => return Err(registry_error(other)),
    };
    let rendered: Rendered = compiled
        .render(
            request.channel,
            request.locale.as_ref(),
            &request.data,
            &state.runner.render_limits(),
        )
        .map_err(|e| template_error("", e))?;
    let mut content = serde_json::to_value(&rendered.content).unwrap_or_default();
    if let Some(object) = content.as_object_mut() {
        object.remove("channel");
    }
    Ok(axum::Json(json!({
        "id": id,
        "version": version_json(&compiled),
        "channel": request.channel,
        "locale": rendered.locale,
        "content": content,
        "sms": rendered.sms,
    }))
    .into_response())
}

/// The registry's routes, mounted by `api::router`.
pub(super) fn routes<S: Store + Inbox, C: Clock>() -> axum::Router<AppState<S, C>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/templates", post(create::<S, C>).get(list::<S, C>))
        .route("/v1/templates/{id}", get(show::<S, C>))
        .route("/v1/templates/{id}/versions", post(add_version::<S, C>))
        .route("/v1/templates/{id}/versions/{version}", get(show_version::<S, C>))
        .route("/v1/templates/{id}/versions/{version}/publish", post(publish::<S, C>))
        .route("/v1/templates/{id}/preview", post(preview::<S, C>))
}
