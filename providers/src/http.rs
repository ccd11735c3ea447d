//! What the HTTP providers share: the client options, the bounded exchange and the
//! classification of transport failures.
//!
//! The one rule that matters here is *when was the request written*. A failure before (connection
//! refused, DNS, TLS handshake, connect timeout) means the provider never heard of the message, so
//! retrying is safe: [`ErrorClass::Retryable`]. A failure after (the deadline passed, the
//! connection was reset mid-exchange) means the provider may have taken it: the outcome is
//! [`ErrorClass::Unknown`] and the lifecycle reconciles before any re-send.

use std::time::Duration;

use reqwest::header::HeaderMap;
use steps::outcome::{ErrorClass, ProviderError};

use crate::Error;
use crate::redact;

/// The largest provider answer read, in bytes. Success answers are under 2 KiB and error bodies
/// are small JSON; a proxy's HTML error page beyond this is cut (only its status matters then).
pub(crate) const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// How long an idle pooled connection is kept. Below the 60 s idle timeout of common load
/// balancers, so we close first: reusing a connection the far side is closing is the classic way
/// to get a reset after the request was written, which would be an (avoidable) unknown outcome.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept per host. One provider is one host; 32 covers the worker concurrency
/// of a single process without keeping sockets nobody uses.
const POOL_IDLE_PER_HOST_MAX: usize = 32;

/// TCP keepalive probe interval, so a silently dropped connection is noticed while idle rather
/// than on the next send.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// The timeouts of one provider, from its config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// The deadline of the whole exchange: connect, write, answer and body.
    pub total: Duration,
    /// The deadline of establishing the connection (DNS, TCP, TLS). A connect that fails within it
    /// is retryable, since nothing was written.
    pub connect: Duration,
}

/// Builds the one client a provider keeps for its lifetime. Every option that matters is passed
/// here explicitly rather than trusted to a default (TigerBeetle style).
pub(crate) fn client(provider: &str, timeouts: Timeouts) -> Result<reqwest::Client, Error> {
    builder(timeouts)
        .build()
        .map_err(|source| Error::Client { provider: provider.to_owned(), source })
}

/// The builder [`client`] builds, for a provider that needs one more option (APNs: HTTP/2 only).
pub(crate) fn builder(timeouts: Timeouts) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        // reqwest's own total timeout is the same deadline as the one `exchange` enforces, so a
        // request abandoned by either surfaces as a timeout (unknown), never as a hang.
        .timeout(timeouts.total)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST_MAX)
        .tcp_keepalive(TCP_KEEPALIVE)
        .tcp_nodelay(true)
        // A provider API never redirects; following one would resend the credentials to wherever a
        // misconfigured proxy points.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("courant/", env!("CARGO_PKG_VERSION")))
}

/// A provider's answer: status, headers and (at most [`ANSWER_BYTES_MAX`] of) the body.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, possibly cut at [`ANSWER_BYTES_MAX`] or where reading it failed.
    pub body: Vec<u8>,
}

impl Answer {
    /// A header's value, when present and valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Retry-After` header in milliseconds, when given in seconds.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.header("retry-after").and_then(steps::outcome::parse_retry_after_secs)
    }
}

/// Sends `request` and reads the answer, all within `timeouts.total`. `known` are literals to
/// scrub from any error message (the recipient's address, our account id).
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
    timeouts: Timeouts,
    known: &[&str],
) -> Result<Answer, ProviderError> {
    let exchange = async {
        let mut response = request.send().await.map_err(|e| transport_error(e, known))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        // Once the status is in, the provider has decided; a body cut short (size limit, reset)
        // only loses detail, so reading stops quietly and the status is classified.
        while body.len() < ANSWER_BYTES_MAX {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = ANSWER_BYTES_MAX - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ok(Answer { status, headers, body })
    };
    match tokio::time::timeout(timeouts.total, exchange).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ProviderError::new(
            ErrorClass::Unknown,
            None,
            None,
            &format!(
                "no answer within {} ms; the request may have been sent",
                timeouts.total.as_millis()
            ),
        )),
    }
}

/// Classifies a failure of the HTTP exchange itself (no status was received).
pub(crate) fn transport_error(error: reqwest::Error, known: &[&str]) -> ProviderError {
    let class = transport_class(&error);
    // The URL carries the account id; the rest of the chain is about the network only.
    let error = error.without_url();
    let detail = redact::scrub(&error_chain(&error), known);
    let prefix = match class {
        ErrorClass::Retryable { .. } => "could not connect; the request was not sent",
        ErrorClass::ProviderConfig => "could not build the request",
        _ => "the exchange failed after the request may have been sent",
    };
    ProviderError::new(class, None, None, &format!("{prefix}: {detail}"))
}

fn transport_class(error: &reqwest::Error) -> ErrorClass {
    if error.is_builder() {
        // An invalid URL or header: our configuration, the same for every message.
        ErrorClass::ProviderConfig
    } else if error.is_connect() {
        // Refused, unreachable, DNS, TLS handshake or connect timeout: the connection never
        // carried the request. Checked before `is_timeout`, which a connect timeout also sets.
        ErrorClass::RETRYABLE
    } else {
        // A timeout, a reset or a protocol error after connecting: the request may have left.
        ErrorClass::Unknown
    }
}

/// The error and its sources, joined. The chain is short (reqwest, hyper, io); the bound only
/// guards against a cycle.
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut current: Option<&dyn std::error::Error> = Some(error);
    for _ in 0..8 {
        let Some(e) = current else { break };
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

/// Logs a provider call's outcome: notification id, provider name and the class, never the
/// recipient or the content.
pub(crate) fn log_outcome(
    provider: &steps::model::ProviderName,
    notification_id: &steps::model::NotificationId,
    outcome: &steps::outcome::SendOutcome,
) {
    match outcome {
        steps::outcome::SendOutcome::Accepted { .. } => {
            tracing::debug!(%notification_id, %provider, "Provider accepted message.");
        }
        steps::outcome::SendOutcome::Failed(error) => {
            tracing::warn!(
                %notification_id,
                %provider,
                class = error.class.name(),
                status = error.status,
                code = error.code.as_deref(),
                %error,
                "Provider call failed."
            );
        }
    }
}

/// Now, in ms since the Unix epoch, for turning a provider's absolute reset time into a delay.
/// The shell may read the clock; the lifecycle core never does.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs one provider call inside a span naming the notification and provider, and logs its
/// outcome: the shared body of every HTTP provider's `Provider::send`.
pub(crate) fn instrumented_send<'a>(
    provider: &'a steps::model::ProviderName,
    message: &'a workflows::ports::Outbound,
    call: impl std::future::Future<Output = steps::outcome::SendOutcome> + Send + 'a,
) -> futures::future::BoxFuture<'a, steps::outcome::SendOutcome> {
    use tracing::Instrument as _;
    let span = tracing::debug_span!(
        "provider_send",
        notification_id = %message.notification_id,
        provider = %provider,
    );
    Box::pin(
        async move {
            let outcome = call.await;
            log_outcome(provider, &message.notification_id, &outcome);
            outcome
        }
        .instrument(span),
    )
}
