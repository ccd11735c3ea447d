//! Logs and traces: the `tracing` subscriber every server command installs, and the optional
//! OpenTelemetry export of its spans.
//!
//! Logs go to stderr (text or JSON), filtered by `COURANT_LOG`. Spans carry the notification id
//! (`notification_id`) and, where known, `tenant`, `channel`, `provider` and `attempt`; never an
//! address, a phone number, a token or rendered content.
//!
//! Export is off unless an OTLP endpoint is configured, by the standard environment variables
//! (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`) or by the configuration
//! file's `[telemetry] otlp_endpoint`. Off, no exporter is built and no span is sent anywhere.
//! On, spans at `info` and above go over OTLP/HTTP (protobuf) through the SDK's batch processor,
//! which runs on its own thread with a bounded queue: a slow or absent collector drops spans,
//! never delays a notification. Failures are logged at most once a minute.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde::Deserialize;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::redact_url;

/// The `[telemetry]` section: trace export.
///
/// ```toml
/// [telemetry]
/// otlp_endpoint = "http://otel-collector:4318"
/// service_name = "courant-eu"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP collector's base URL; spans are posted to `{otlp_endpoint}/v1/traces`.
    /// Unset (the default): no export, unless `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, which take precedence over this.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of exported spans (`OTEL_SERVICE_NAME` wins).
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: SERVICE_NAME_DEFAULT.to_owned() }
    }
}

/// What exported spans are attributed to unless configured otherwise.
const SERVICE_NAME_DEFAULT: &str = "courant";
/// Long enough for any real service name, short enough to stay a label.
const SERVICE_NAME_LEN_MAX: usize = 128;
/// The OTLP/HTTP path of traces, appended to a base endpoint (as the OTLP specification does for
/// `OTEL_EXPORTER_OTLP_ENDPOINT`).
const TRACES_PATH: &str = "/v1/traces";
/// At most one export-failure warning per this long; the ones in between are counted.
const FAILURE_LOG_PERIOD: Duration = Duration::from_secs(60);
/// How long exiting waits for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

impl TelemetryConfig {
    /// Checks the endpoint (an `http` or `https` URL without credentials: the URL is logged when
    /// export fails) and the service name.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(endpoint) = &self.otlp_endpoint {
            let url = url::Url::parse(endpoint)
                .map_err(|e| anyhow::anyhow!("otlp_endpoint: not a URL ({e})"))?;
            if !matches!(url.scheme(), "http" | "https") {
                bail!("otlp_endpoint: must be an http:// or https:// URL");
            }
            if !url.username().is_empty() || url.password().is_some() {
                bail!("otlp_endpoint: must not carry credentials");
            }
            if url.query().is_some() || url.fragment().is_some() {
                bail!("otlp_endpoint: must be a base URL, without a query or fragment");
            }
        }
        let name = &self.service_name;
        if name.trim().is_empty() || name.len() > SERVICE_NAME_LEN_MAX {
            bail!("service_name: must be 1 to {SERVICE_NAME_LEN_MAX} characters");
        }
        Ok(())
    }
}

/// Where spans go, once the environment and the file are weighed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Nowhere: no exporter is built.
    Off,
    /// The standard environment variables name the endpoint; the OTLP exporter reads them.
    Environment,
    /// The configuration file's endpoint, with the traces path appended.
    File(String),
}

/// The export target: the environment's endpoint variables first (`OTEL_SDK_DISABLED=true`
/// turns export off whatever is set), then the file's; an empty variable counts as unset.
fn target(config: &TelemetryConfig, env: impl Fn(&str) -> Option<String>) -> Target {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Target::Off;
    }
    if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT") {
        return Target::Environment;
    }
    match &config.otlp_endpoint {
        Some(base) => Target::File(format!("{}{TRACES_PATH}", base.trim_end_matches('/'))),
        None => Target::Off,
    }
}

/// The running subscriber's export half; [`shutdown`](Telemetry::shutdown) it on exit.
#[derive(Debug)]
pub struct Telemetry {
    /// The tracer provider, when export is on.
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still queued and stops the exporter (waits at most 5 s).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            tracing::warn!(%error, "Trace export did not shut down cleanly; spans may be lost.");
        }
    }
}

/// Installs the global subscriber: logs on stderr (`json` or text) filtered by `COURANT_LOG`
/// (default `info`), and, when `export` is given and it or the environment names an OTLP
/// endpoint, the span exporter. Call it outside the async runtime: the exporter's blocking HTTP
/// client may not be built on a runtime thread.
pub fn init(json: bool, export: Option<&TelemetryConfig>) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COURANT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json { fmt.json().boxed() } else { fmt.boxed() };
    let provider = match export.map(|c| (c, target(c, |name| std::env::var(name).ok()))) {
        None | Some((_, Target::Off)) => None,
        Some((config, target)) => Some(provider(config, target)?),
    };
    // Exported spans have their own level: `COURANT_LOG=warn` quiets the logs, not the traces.
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("courant"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .context("cannot install the log subscriber")?;
    if provider.is_some() {
        tracing::info!("Exporting spans over OTLP/HTTP.");
    }
    Ok(Telemetry { provider })
}

/// The tracer provider: the OTLP/HTTP protobuf exporter behind the SDK's batch processor (its
/// queue, batch size and delay follow the `OTEL_BSP_*` variables; 2,048 spans, 512, 5 s). The
/// call's timeout is `OTEL_EXPORTER_OTLP_TIMEOUT`'s, 10 s by default: not set here, as a value set
/// here would override the variable.
fn provider(config: &TelemetryConfig, target: Target) -> anyhow::Result<SdkTracerProvider> {
    let builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    let builder = match target {
        Target::File(endpoint) => builder.with_endpoint(endpoint),
        Target::Environment | Target::Off => builder,
    };
    // The error may quote an endpoint variable's value, credentials and all.
    let exporter = builder.build().map_err(|e| {
        anyhow::anyhow!("cannot build the OTLP span exporter: {}", redact_url(&e.to_string()))
    })?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(config.service_name.clone());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(Logged::new(exporter))
        .with_resource(resource.build())
        .build())
}

/// An exporter that logs its failures, at most once per [`FAILURE_LOG_PERIOD`]: a collector
/// that is down must not flood the logs (the SDK's own internal logs are compiled out).
#[derive(Debug)]
struct Logged<E> {
    /// The OTLP exporter.
    inner: E,
    /// When a failure was last logged, and how many failed since.
    failures: Mutex<(Option<Instant>, u64)>,
}

impl<E> Logged<E> {
    fn new(inner: E) -> Self {
        Self { inner, failures: Mutex::new((None, 0)) }
    }

    fn failed(&self, spans: usize, error: &dyn std::fmt::Display) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, count) = &mut *failures;
        *count += 1;
        if last.is_some_and(|at| at.elapsed() < FAILURE_LOG_PERIOD) {
            return;
        }
        // The error may quote the endpoint, which the environment could give with credentials.
        let error = redact_url(&error.to_string());
        tracing::warn!(
            %error,
            spans,
            failed_exports = *count,
            "Span export failed; spans were dropped (notifications are unaffected)."
        );
        *last = Some(Instant::now());
        *count = 0;
    }
}

impl<E: SpanExporter> SpanExporter for Logged<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(error) = &result {
            self.failed(spans, error);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_configured() {
        let none = TelemetryConfig::default();
        assert_eq!(target(&none, env(&[])), Target::Off);
        // Empty variables are unset, as the OTLP specification reads them.
        let empty =
            [("OTEL_EXPORTER_OTLP_ENDPOINT", " "), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")];
        assert_eq!(target(&none, env(&empty)), Target::Off);
        // A service name alone turns nothing on.
        let named = TelemetryConfig { service_name: "eu".into(), ..TelemetryConfig::default() };
        assert_eq!(target(&named, env(&[])), Target::Off);
    }

    #[test]
    fn the_environment_wins_over_the_file_and_can_disable_export() {
        let file = TelemetryConfig {
            otlp_endpoint: Some("http://collector:4318/".into()),
            ..TelemetryConfig::default()
        };
        assert_eq!(target(&file, env(&[])), Target::File("http://collector:4318/v1/traces".into()));
        let vars = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:4318/v1/traces")];
        assert_eq!(target(&file, env(&vars)), Target::Environment);
        let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318")];
        assert_eq!(target(&TelemetryConfig::default(), env(&vars)), Target::Environment);
        let vars =
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"), ("OTEL_SDK_DISABLED", "TRUE")];
        assert_eq!(target(&file, env(&vars)), Target::Off);
    }

    #[test]
    fn validation_names_the_field() {
        let check = |endpoint: &str, name: &str| {
            let config =
                TelemetryConfig { otlp_endpoint: Some(endpoint.into()), service_name: name.into() };
            config.validate().map_err(|e| e.to_string())
        };
        assert!(check("http://collector:4318", "courant").is_ok());
        assert!(check("https://otel.example.com/base", "courant").is_ok());
        for (endpoint, name, field) in [
            ("collector:4318", "courant", "otlp_endpoint"),
            ("not a url", "courant", "otlp_endpoint"),
            ("ftp://collector", "courant", "otlp_endpoint"),
            ("http://user:secret@collector:4318", "courant", "otlp_endpoint"),
            ("http://collector:4318?x=1", "courant", "otlp_endpoint"),
            ("http://collector:4318", " ", "service_name"),
        ] {
            let err = check(endpoint, name).unwrap_err();
            assert!(err.starts_with(field), "{endpoint} {name}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
