//! Builds the running system from configuration: providers, the runner, the workers, the API and
//! the sandbox, for `courant dev` (everything in memory) and `courant serve` (Redis).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use apalis::prelude::*;
use futures::FutureExt;
use serde::Deserialize;
use steps::model::{Channel, ProviderName, TenantId};
use storage::backend::WakeBackend;
use storage::queue::{WakeQueue, WorkerBeat};
use storage::stats::StatsStore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;
use workflows::fanout::Expander;
use workflows::ports::{Campaigns, Clock, Directory, Inbox, Provider, Store};
use workflows::record::Wake;
use workflows::runner::Runner;
use workflows::transitions::TransitionFeed;

use crate::Role;
use crate::api::{self, AppState};
use crate::config::{Config, redact_url};

/// One configured provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    /// SendGrid v3 mail send (email).
    Sendgrid(providers::sendgrid::SendGridConfig),
    /// Twilio Messages (SMS).
    Twilio(providers::twilio::TwilioConfig),
    /// Vonage's SMS API (SMS).
    Vonage(providers::vonage::VonageConfig),
    /// A signed outbound webhook, Standard Webhooks style (chat).
    Webhook(providers::webhook::WebhookConfig),
    /// A Slack incoming webhook (chat).
    Slack(providers::slack::SlackConfig),
    /// Firebase Cloud Messaging HTTP v1 (push to Android and web devices).
    Fcm(providers::fcm::FcmConfig),
    /// Apple Push Notification service (push to iOS devices).
    Apns(providers::apns::ApnsConfig),
    /// Several push providers as one: each member sends to the devices of its platforms.
    PushGroup(PushGroupConfig),
    /// Amazon SES v2 SendEmail (email).
    Ses(providers::ses::SesConfig),
    /// An SMTP relay (email).
    Smtp(providers::smtp::SmtpConfig),
    /// The in-app inbox, stored by courant.
    InApp,
}

/// A `push_group` provider: `members` names configured `fcm` and `apns` providers.
///
/// ```toml
/// [providers.push]
/// kind = "push_group"
/// members = ["apns", "fcm"]
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushGroupConfig {
    /// The member providers, in the order they send (1 to 8, each an `fcm` or `apns` provider).
    pub members: Vec<ProviderName>,
}

/// The most members of a push group.
pub const PUSH_GROUP_MEMBERS_MAX: usize = 8;

impl ProviderConfig {
    /// Whether it is a push service a [`PushGroupConfig`] may name.
    pub fn is_push_service(&self) -> bool {
        matches!(self, ProviderConfig::Fcm(_) | ProviderConfig::Apns(_))
    }

    /// The channel the provider serves.
    pub fn channel(&self) -> Channel {
        match self {
            ProviderConfig::Sendgrid(_) => Channel::Email,
            ProviderConfig::Twilio(_) | ProviderConfig::Vonage(_) => Channel::Sms,
            ProviderConfig::Webhook(_) | ProviderConfig::Slack(_) => Channel::Chat,
            ProviderConfig::Fcm(_) | ProviderConfig::Apns(_) | ProviderConfig::PushGroup(_) => {
                Channel::Push
            }
            ProviderConfig::Ses(_) | ProviderConfig::Smtp(_) => Channel::Email,
            ProviderConfig::InApp => Channel::InApp,
        }
    }

    /// Checks the provider's settings.
    pub fn validate(&self, name: &ProviderName) -> anyhow::Result<()> {
        match self {
            ProviderConfig::Sendgrid(c) => c.validate(name)?,
            ProviderConfig::Twilio(c) => c.validate(name)?,
            ProviderConfig::Vonage(c) => c.validate(name)?,
            ProviderConfig::Webhook(c) => c.validate(name)?,
            ProviderConfig::Slack(c) => c.validate(name)?,
            ProviderConfig::Fcm(c) => {
                c.validate(name)?;
                c.load_key(name)?;
            }
            ProviderConfig::Apns(c) => {
                c.validate(name)?;
                c.load_key(name)?;
            }
            ProviderConfig::PushGroup(c) => {
                if c.members.is_empty() || c.members.len() > PUSH_GROUP_MEMBERS_MAX {
                    anyhow::bail!("members: must name 1 to {PUSH_GROUP_MEMBERS_MAX} providers");
                }
            }
            ProviderConfig::Ses(c) => c.validate(name)?,
            ProviderConfig::Smtp(c) => c.validate(name)?,
            ProviderConfig::InApp => {}
        }
        Ok(())
    }
}

/// The system clock the server runs on (the simulator hands out virtual time instead).
pub use storage::memory::SystemClock;

/// Builds the configured providers; every HTTP provider gets a circuit breaker registered in
/// `breakers` (the in-app inbox is our own store, which has no breaker to trip).
fn build_providers<I: Inbox + Clone>(
    config: &Config,
    inbox: &I,
    breakers: &providers::breaker::Registry,
) -> anyhow::Result<Vec<Arc<dyn Provider>>> {
    let mut built: Vec<Arc<dyn Provider>> = Vec::new();
    let mut by_name: BTreeMap<ProviderName, Arc<dyn Provider>> = BTreeMap::new();
    let guarded = |provider: Arc<dyn Provider>| -> Arc<dyn Provider> {
        Arc::new(providers::breaker::Breaker::new(
            provider,
            config.breaker,
            breakers.clone(),
            Arc::new(SystemClock),
        ))
    };
    for (name, provider) in &config.providers {
        let provider: Arc<dyn Provider> = match provider {
            ProviderConfig::Sendgrid(c) => {
                guarded(Arc::new(providers::sendgrid::SendGrid::new(name.clone(), c.clone())?))
            }
            ProviderConfig::Twilio(c) => {
                guarded(Arc::new(providers::twilio::Twilio::new(name.clone(), c.clone())?))
            }
            ProviderConfig::Vonage(c) => {
                guarded(Arc::new(providers::vonage::Vonage::new(name.clone(), c.clone())?))
            }
            ProviderConfig::Webhook(c) => {
                guarded(Arc::new(providers::webhook::Webhook::new(name.clone(), c.clone())?))
            }
            ProviderConfig::Slack(c) => {
                guarded(Arc::new(providers::slack::Slack::new(name.clone(), c.clone())?))
            }
            ProviderConfig::Fcm(c) => {
                guarded(Arc::new(providers::fcm::Fcm::new(name.clone(), c.clone())?))
            }
            ProviderConfig::Apns(c) => {
                guarded(Arc::new(providers::apns::Apns::new(name.clone(), c.clone())?))
            }
            ProviderConfig::Ses(c) => {
                guarded(Arc::new(providers::ses::Ses::new(name.clone(), c.clone())?))
            }
            ProviderConfig::Smtp(c) => {
                guarded(Arc::new(providers::smtp::Smtp::new(name.clone(), c.clone())?))
            }
            ProviderConfig::InApp => {
                Arc::new(providers::inapp::InAppProvider::new(name.clone(), inbox.clone()))
            }
            // Built below, once their members are.
            ProviderConfig::PushGroup(_) => continue,
        };
        by_name.insert(name.clone(), provider.clone());
        built.push(provider);
    }
    for (name, provider) in &config.providers {
        if let ProviderConfig::PushGroup(group) = provider {
            let members = group
                .members
                .iter()
                .map(|m| {
                    by_name.get(m).cloned().ok_or_else(|| {
                        anyhow::anyhow!("providers.{name}: member '{m}' is not configured")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            built.push(Arc::new(providers::push::PushGroup::new(name.clone(), members)));
        }
    }
    Ok(built)
}

/// A shutdown signal shared by every part of the process.
#[derive(Clone)]
struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    fn listen() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("Shutdown requested; finishing in-flight work.");
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn handle_wake<S: Store + Directory, C: Clock>(
    wake: Wake,
    runner: Data<Arc<Runner<S, C>>>,
) -> Result<(), BoxDynError> {
    // `instrument`, not `span.enter()`: an entered guard held across an await stays entered on
    // the thread while other tasks run there, so every span they open hangs off this one; under
    // load the chain grew thousands long and dropping it overflowed the stack.
    let span = tracing::info_span!(
        "wake",
        notification_id = %wake.id,
        tenant = %wake.tenant,
        version = wake.version
    );
    async move {
        match runner.advance(&wake).await {
            Ok(advanced) => {
                tracing::debug!(?advanced, "Wake-up handled.");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "Wake-up failed; it will be retried.");
                Err::<(), BoxDynError>(Box::new(error))
            }
        }
    }
    .instrument(span)
    .await
}

/// How often an idle worker looks for due campaign pages: a started campaign's first page waits
/// at most this long, and an idle fleet spends one small pipeline per worker per period on it.
const CAMPAIGN_POLL_MS: u64 = 250;

/// The campaign loop of a worker process: expands due campaign pages and sweeps cancelled
/// campaigns (`workflows::fanout`), until shutdown. A page in progress is finished first.
async fn run_campaigns<S, C>(runner: Arc<Runner<S, C>>, shutdown: Shutdown)
where
    S: Store + Campaigns + Directory,
    C: Clock,
{
    let expander = Expander::new(runner);
    let mut errors = 0_u32;
    loop {
        let pause_ms = match expander.tick().await {
            Ok(tick) => {
                errors = 0;
                if let Some(rejection) = &tick.rejection {
                    tracing::warn!(
                        rejected = tick.rejected,
                        %rejection,
                        "Campaign recipients could not become notifications."
                    );
                }
                if tick.finished > 0 {
                    tracing::info!(finished = tick.finished, "Campaigns finished their pages.");
                }
                if tick.pages > 0 {
                    tracing::debug!(?tick, "Campaign pages done.");
                }
                // Straight on while pages come, else until the next page it knows of, at most
                // a poll period.
                match (tick.pages, tick.next_due_ms) {
                    (0, _) => CAMPAIGN_POLL_MS,
                    (_, Some(due_ms)) => {
                        due_ms.saturating_sub(SystemClock.now_ms()).min(CAMPAIGN_POLL_MS)
                    }
                    (_, None) => 0,
                }
            }
            Err(error) => {
                errors = errors.saturating_add(1);
                tracing::warn!(%error, errors, "Campaign expansion failed; retrying.");
                storage::queue::retry_delay_ms(errors - 1, CAMPAIGN_POLL_MS, 10_000)
            }
        };
        tokio::select! {
            () = shutdown.clone().wait() => return,
            () = tokio::time::sleep(Duration::from_millis(pause_ms)) => {}
        }
    }
}

async fn run_workers<S, C, Q>(
    runner: Arc<Runner<S, C>>,
    queue: Q,
    breakers: providers::breaker::Registry,
    concurrency: usize,
    shutdown: Shutdown,
) -> anyhow::Result<()>
where
    S: Store + Campaigns + Directory,
    C: Clock,
    Q: WakeQueue + Clone + Unpin,
{
    let campaigns = tokio::spawn(run_campaigns(runner.clone(), shutdown.clone()));
    // A fresh name per process: consumers need no registration, but a unique name keeps the
    // pending entries of a dead process apart from a live one's in `XPENDING`.
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    let name = format!("courant-{host}-{}-{}", std::process::id(), ulid::Ulid::generate());
    let beat = WorkerBeat {
        id: name.clone(),
        host,
        pid: std::process::id(),
        slots: u32::try_from(concurrency).unwrap_or(u32::MAX),
        started_at_ms: queue.now_ms(),
        seen_at_ms: queue.now_ms(),
        breakers: Vec::new(),
    };
    let heartbeat = tokio::spawn(run_heartbeat(queue.clone(), beat, breakers, shutdown.clone()));
    // Besides fetching, the backend's maintenance round promotes due timers, reclaims a dead
    // worker's wake-ups and runs the reaper (every 30 s: re-drives notifications whose wake-up
    // was lost, see `storage::queue::REAPER_SLACK_MS`), in every worker process on its own.
    let backend = WakeBackend::new(queue).concurrency(concurrency);
    Monitor::new()
        .register(move |_| {
            WorkerBuilder::new(name.as_str())
                .backend(backend.clone())
                .concurrency(concurrency)
                .catch_panic()
                .data(runner.clone())
                .build(handle_wake::<S, C>)
        })
        .shutdown_timeout(Duration::from_secs(30))
        .run_with_signal(async move {
            shutdown.wait().await;
            Ok(())
        })
        .await
        .context("workers stopped with an error")?;
    heartbeat.await.context("the heartbeat loop panicked")?;
    campaigns.await.context("the campaign loop panicked")
}

/// Writes this worker process's heartbeat, with its provider breakers, into the store's registry
/// every [`HEARTBEAT_MS`](storage::queue::HEARTBEAT_MS) until shutdown, for `courant queues` and
/// `courant breakers`. A failed write is logged and tried again at the next beat: the registry
/// is for operators, the work goes on without it.
async fn run_heartbeat<Q: WakeQueue>(
    queue: Q,
    mut beat: WorkerBeat,
    breakers: providers::breaker::Registry,
    shutdown: Shutdown,
) {
    loop {
        beat.seen_at_ms = queue.now_ms();
        beat.breakers = breakers.views().iter().map(breaker_beat).collect();
        if let Err(error) = queue.heartbeat(&beat).await {
            tracing::warn!(%error, "Worker heartbeat failed; retrying at the next beat.");
        }
        tokio::select! {
            () = shutdown.clone().wait() => return,
            () = tokio::time::sleep(Duration::from_millis(storage::queue::HEARTBEAT_MS)) => {}
        }
    }
}

/// A breaker's view as a heartbeat reports it.
fn breaker_beat(view: &providers::breaker::BreakerView) -> storage::queue::BreakerBeat {
    let state = serde_json::to_value(view.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    storage::queue::BreakerBeat {
        provider: view.provider.to_string(),
        channel: view.channel.to_string(),
        state,
        since_ms: view.since_ms,
        opened: view.opened,
        rejected: view.rejected,
        calls: view.calls,
        failures: view.failures,
        recent_calls: view.recent.calls(),
        recent_failures: view.recent.failures(),
        consecutive_failures: view.consecutive_failures,
    }
}

async fn run_api<S, C>(
    state: AppState<S, C>,
    metrics: axum::Router,
    receivers: api::webhooks::Receivers,
    listen: SocketAddr,
    shutdown: Shutdown,
) -> anyhow::Result<()>
where
    S: Store
        + Inbox
        + Directory
        + Campaigns
        + workflows::inbox::InboxState
        + workflows::inbox::InboxFeed
        + TransitionFeed
        + WakeQueue
        + StatsStore,
    C: Clock,
{
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another courant running?)"))?;
    tracing::info!(address = %listen, "API listening.");
    // Open live streams (inbox, events) end at shutdown, or graceful shutdown would wait for
    // them forever.
    let streams_end = api::hub::StreamsEnd::new(shutdown.clone().wait());
    // The providers' receipt webhooks: signed, no API key, their own body limit.
    let webhooks = api::webhooks::routes(state.runner.clone(), receivers);
    let router = api::traced(
        api::router(state).layer(axum::Extension(streams_end)).merge(metrics).merge(webhooks),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.wait())
        .await
        .context("the API server failed")
}

/// `courant dev`: everything in one process, in memory, with the sandbox as providers.
pub async fn dev(listen: SocketAddr, templates_dir: PathBuf, demo: bool) -> anyhow::Result<()> {
    let shutdown = Shutdown::listen();
    let sandbox_listener = TcpListener::bind("127.0.0.1:0").await?;
    let sandbox_url = format!("http://{}", sandbox_listener.local_addr()?);
    // The sandbox sends signed receipts back (SendGrid's event webhook with its own key, Twilio's
    // status callbacks), so a notification ends `delivered` by a real receipt, as in production.
    let api_base = if listen.ip().is_unspecified() {
        format!("http://127.0.0.1:{}", listen.port())
    } else {
        format!("http://{listen}")
    };
    let mut sandbox_config = providers::sandbox::SandboxConfig::default();
    sandbox_config.sendgrid.receipts.enabled = true;
    sandbox_config.sendgrid.receipts_url =
        Some(format!("{api_base}/v1/webhooks/sendgrid/sendgrid"));
    sandbox_config.twilio.receipts.enabled = true;
    sandbox_config.ses.receipts.enabled = true;
    sandbox_config.ses.receipts_url = Some(format!("{api_base}/v1/webhooks/ses/ses"));
    let sandbox = providers::sandbox::Sandbox::new(sandbox_config)?;
    // Keys and certificates the dev providers and receivers read from files.
    let keys = std::env::temp_dir().join(format!("courant-dev-{}", std::process::id()));
    std::fs::create_dir_all(&keys)
        .with_context(|| format!("cannot create the dev key directory {}", keys.display()))?;
    let sns_cert = keys.join("sandbox-sns-certificate.pem");
    std::fs::write(&sns_cert, sandbox.ses_signing_cert_pem())
        .with_context(|| format!("cannot write {}", sns_cert.display()))?;
    let ses_topic = sandbox.ses_topic_arn().to_owned();
    let (mut sendgrid, mut twilio) = providers::sandbox::dev_provider_configs(&sandbox_url);
    sendgrid.event_webhook = Some(providers::sendgrid::EventWebhookConfig {
        public_key: sandbox.sendgrid_webhook_key(),
        tolerance_s: providers::sendgrid::EVENT_WEBHOOK_TOLERANCE_S_DEFAULT,
    });
    twilio.status_callback_base_url = Some(api_base);
    let (vonage, webhook, slack) = providers::sandbox::dev_chat_provider_configs(&sandbox_url);
    // The sandbox's SMTP relay, for the SMTP provider; it stops with the sandbox.
    let smtp_listener = TcpListener::bind("127.0.0.1:0").await?;
    let smtp_port = smtp_listener.local_addr()?.port();
    tokio::spawn(providers::sandbox::serve_smtp(smtp_listener, sandbox.clone()));
    let sandbox_shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(error) =
            providers::sandbox::serve_with(sandbox_listener, sandbox, sandbox_shutdown.wait()).await
        {
            tracing::error!(%error, "Sandbox stopped.");
        }
    });

    let mut config = Config { templates_dir, ..Config::default() };
    config.api.listen = listen;
    config.providers.insert(ProviderName::new("sendgrid")?, ProviderConfig::Sendgrid(sendgrid));
    config.providers.insert(ProviderName::new("twilio")?, ProviderConfig::Twilio(twilio));
    config.providers.insert(ProviderName::new("vonage")?, ProviderConfig::Vonage(vonage));
    config.providers.insert(ProviderName::new("webhook")?, ProviderConfig::Webhook(webhook));
    config.providers.insert(ProviderName::new("slack")?, ProviderConfig::Slack(slack));
    // SMS fails over from Twilio to Vonage, chat from Slack to the signed webhook: the routes
    // `finish` fills from the configured providers in name order say exactly that.
    // Second in the email route (names sort after "sendgrid"): SES takes over when SendGrid fails.
    let ses = providers::sandbox::dev_ses_config(&sandbox_url);
    config.providers.insert(ProviderName::new("ses")?, ProviderConfig::Ses(ses));
    // SES's events come back through the sandbox's SNS, signed with its certificate, pinned.
    config.webhooks.ses.insert(
        ProviderName::new("ses")?,
        crate::api::webhooks::SesWebhookConfig {
            topic_arns: vec![ses_topic],
            certificate_pem_file: Some(sns_cert),
            tolerance_s: providers::sns::TOLERANCE_S_DEFAULT,
            confirm_subscriptions: false,
        },
    );
    // Third (after "ses"): the SMTP provider, to the sandbox's SMTP relay.
    let smtp = providers::sandbox::dev_smtp_config(smtp_port);
    config.providers.insert(ProviderName::new("smtp")?, ProviderConfig::Smtp(smtp));
    config.providers.insert(ProviderName::new("inapp")?, ProviderConfig::InApp);
    // Push: the sandbox's fake FCM and APNs, with the built-in test-only keys written to a
    // per-process directory, behind one push group (so every device of a recipient gets it).
    let (fcm, apns) = providers::sandbox::dev_push_configs(&sandbox_url, &keys)
        .with_context(|| format!("cannot write the dev push keys to {}", keys.display()))?;
    let (fcm_name, apns_name) = (ProviderName::new("fcm")?, ProviderName::new("apns")?);
    config.providers.insert(fcm_name.clone(), ProviderConfig::Fcm(fcm));
    config.providers.insert(apns_name.clone(), ProviderConfig::Apns(apns));
    config.providers.insert(
        ProviderName::new("push")?,
        ProviderConfig::PushGroup(PushGroupConfig { members: vec![apns_name, fcm_name] }),
    );
    let config = config.finish()?;

    let receivers = api::webhooks::Receivers::from_config(&config)?;
    let store = storage::memory::MemoryStore::default();
    let breakers = providers::breaker::Registry::default();
    let (runner, metrics) = build_runner(&config, &store, &breakers, config.worker.concurrency)?;
    let tenant = TenantId::new("dev")?;
    let key = crate::auth::create(&store, &tenant).await?;
    eprintln!(
        "\ncourant dev: API on http://{listen}, provider sandbox on {sandbox_url} \
         (SMTP on 127.0.0.1:{smtp_port})\n\
         NOT DURABLE: everything is in memory and lost when this process stops.\n\n\
         API key for tenant 'dev':\n  export COURANT_API_KEY={key}\n\n\
         Try:\n  cargo run -- send --recipient ada --email ada@example.com --channel email \\\n    \
         --template welcome --data '{{\"name\":\"Ada\",\"product\":\"courant\"}}'\n  \
         cargo run -- list\n  cargo run -- history <id>\n"
    );
    let state = AppState {
        runner: runner.clone(),
        limits: config.api.limits,
        ready: Arc::new(|| async { Ok(()) }.boxed()),
    };
    if demo {
        tokio::spawn(crate::wiring::demo(runner.clone(), tenant));
    }
    let api = run_api(state, metrics, receivers, listen, shutdown.clone());
    let workers = run_workers(runner, store, breakers, config.worker.concurrency, shutdown);
    let (api, workers) = tokio::join!(api, workers);
    api.and(workers)
}

/// The runner over `store`: the configured providers (each HTTP one behind a breaker in
/// `breakers`), the built-in templates (the directory) for every tenant and each tenant's
/// registry in the same store, and the observers it reports to: the metrics (with their
/// `/metrics` route), the live feed's publisher and the stored statistics of `courant stats`
/// (`crate::stats`).
fn build_runner<S>(
    config: &Config,
    store: &S,
    breakers: &providers::breaker::Registry,
    worker_slots: usize,
) -> anyhow::Result<(Arc<Runner<S, SystemClock>>, axum::Router)>
where
    S: Store
        + Inbox
        + WakeQueue
        + StatsStore
        + workflows::ports::TemplateStore
        + TransitionFeed
        + Clone
        + Send
        + Sync
        + 'static,
{
    let templates = Arc::new(crate::templates::load(&config.templates_dir)?);
    let providers = build_providers(config, store, breakers)?;
    let metrics = Arc::new(crate::metrics::Metrics::new(worker_slots));
    let publisher =
        crate::events::Publisher::start(store.clone(), metrics.transition_events_dropped());
    let stats = crate::stats::StatsRecorder::start(store.clone(), metrics.stats_dropped());
    let runner = Arc::new(
        Runner::new(
            store.clone(),
            SystemClock,
            templates,
            Arc::new(config.policy.clone()),
            providers,
        )
        .with_template_store(Arc::new(store.clone()))
        .with_observer(metrics.clone())
        .with_observer(publisher)
        .with_observer(stats),
    );
    let routes = crate::metrics::routes(metrics, queue_probe(store), breakers.clone());
    Ok((runner, routes))
}

/// Reads the shared queue's counts for `/metrics`.
fn queue_probe<Q: WakeQueue + Clone + Send + Sync + 'static>(
    queue: &Q,
) -> crate::metrics::QueueProbe {
    let queue = queue.clone();
    Arc::new(move || {
        let queue = queue.clone();
        async move {
            let stats = queue.stats().await.map_err(|e| e.to_string())?;
            let now_ms = queue.now_ms();
            let workers = queue.workers().await.map_err(|e| e.to_string())?;
            let alive = workers.iter().filter(|w| w.alive(now_ms)).count();
            Ok(crate::metrics::QueueReading {
                lag_ms: stats.lag_ms(now_ms),
                workers_alive: u64::try_from(alive).unwrap_or(u64::MAX),
                stats,
            })
        }
        .boxed()
    })
}

/// Submits a few notifications and prints how they end, so a newcomer sees courant work.
async fn demo<S: Store + Directory, C: Clock>(runner: Arc<Runner<S, C>>, tenant: TenantId) {
    use workflows::runner::Submission;
    let data = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
    let recipient = |id: &str| steps::model::Recipient {
        id: steps::model::RecipientId::new(id).unwrap_or_else(|_| unreachable!()),
        email: steps::model::EmailAddress::parse("ada@example.com").ok(),
        phone: steps::model::PhoneNumber::parse("+14155550123").ok(),
        opt_out: vec![],
    };
    let demos = [
        (Channel::Email, "welcome", serde_json::json!({"name": "Ada", "product": "courant"})),
        (Channel::Sms, "otp", serde_json::json!({"code": "481516", "product": "courant"})),
        (Channel::InApp, "order_shipped", serde_json::json!({"name": "Ada", "order_id": "A-1"})),
        (Channel::Chat, "order_shipped", serde_json::json!({"name": "Ada", "order_id": "A-1"})),
    ];
    let mut ids = Vec::new();
    for (channel, template, values) in demos {
        let id =
            storage::keys::new_notification_id(&tenant, None, &ulid::Ulid::generate().to_string());
        let submission = Submission {
            recipient: recipient("ada"),
            channel,
            template: steps::model::TemplateId::new(template).unwrap_or_else(|_| unreachable!()),
            data: data(values),
            category: steps::model::Category::new("demo").unwrap_or_else(|_| unreachable!()),
            locale: None,
            correlation: Default::default(),
        };
        match runner.submit(&tenant, id, submission, None).await {
            Ok(submitted) => ids.push(submitted.id),
            Err(error) => tracing::error!(%error, "Demo submission failed."),
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in ids {
        if let Ok(Some(record)) = runner.store().load(&tenant, &id).await {
            eprintln!(
                "demo: {id} ({}) is {}: see `cargo run -- history {id}`",
                record.request.channel,
                record.state.kind()
            );
        }
    }
}

/// `courant serve`: API and/or workers on Redis.
///
/// `config` is the file as read (the binary reads it before logging starts, for its
/// `[telemetry]` section); the defaults without one.
pub async fn serve(
    config: Config,
    redis: Option<String>,
    role: Role,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let mut config = config;
    if let Some(url) = redis {
        config.redis.url = url;
    }
    if let Some(listen) = listen {
        config.api.listen = listen;
    }
    let config = config.finish()?;
    let store =
        storage::redis::RedisStore::connect(&config.redis.url).await.with_context(|| {
            format!(
                "cannot start: Redis at {} is not usable; start redis-server or pass --redis URL",
                redact_url(&config.redis.url)
            )
        })?;
    for warning in store.durability_warnings().await {
        tracing::warn!(%warning, "Redis is not configured for durability.");
    }
    if role != Role::Api {
        // Wake-up times are written with one host's clock and promoted with another's: workers
        // on a host whose clock is off would fire deferrals early and can spin on them.
        let skew_ms = store.clock_skew_ms().await?;
        let max = storage::keys::CLOCK_SKEW_MS_MAX;
        if skew_ms.unsigned_abs() > max {
            bail!(
                "this host's clock is {skew_ms} ms off Redis's; workers need it within {max} ms \
                 (run NTP, or start this process with --role api)"
            );
        }
    }
    let breakers = providers::breaker::Registry::default();
    let receivers = api::webhooks::Receivers::from_config(&config)?;
    if config.policy.routes.is_empty() {
        tracing::warn!("No provider is configured: every notification will dead-letter.");
    }
    let worker_slots = if role == Role::Api { 0 } else { config.worker.concurrency };
    let (runner, metrics) = build_runner(&config, &store, &breakers, worker_slots)?;
    let shutdown = Shutdown::listen();
    let probe_store = store.clone();
    let state = AppState {
        runner: runner.clone(),
        limits: config.api.limits,
        ready: Arc::new(move || {
            let store = probe_store.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }.boxed()
        }),
    };
    tracing::info!(redis = %redact_url(&config.redis.url), ?role, "courant serving.");
    match role {
        Role::Api => run_api(state, metrics, receivers, config.api.listen, shutdown).await,
        Role::Worker => {
            run_workers(runner, store, breakers, config.worker.concurrency, shutdown).await
        }
        Role::All => {
            let api = run_api(state, metrics, receivers, config.api.listen, shutdown.clone());
            let workers = run_workers(runner, store, breakers, config.worker.concurrency, shutdown);
            let (api, workers) = tokio::join!(api, workers);
            api.and(workers)
        }
    }
}

/// `courant sandbox`.
pub async fn sandbox(listen: SocketAddr, config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = match config {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{} is invalid", path.display()))?
        }
        None => providers::sandbox::SandboxConfig::default(),
    };
    let listener =
        TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(address = %listen, "Sandbox listening.");
    providers::sandbox::serve(listener, config, Shutdown::listen().wait())
        .await
        .context("the sandbox failed")
}

/// `courant keys create`.
pub async fn create_key(
    tenant: &str,
    redis: Option<String>,
    config_path: Option<PathBuf>,
) -> anyhow::Result<String> {
    let tenant = TenantId::new(tenant).map_err(|e| anyhow::anyhow!("--tenant {e}"))?;
    let mut config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(url) = redis {
        config.redis.url = url;
    }
    if config.redis.url.is_empty() {
        bail!("no Redis URL: pass --redis URL");
    }
    let store = storage::redis::RedisStore::connect(&config.redis.url).await?;
    Ok(crate::auth::create(&store, &tenant).await?)
}

#[cfg(test)]
mod email_provider_tests {
    use super::*;

    const EMAIL_PROVIDERS: &str = r#"
[providers.ses]
kind = "ses"
base_url = "https://email.eu-west-1.amazonaws.com"
region = "eu-west-1"
access_key_id = "AKIAIOSFODNN7EXAMPLE"
secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
from = "noreply@shop.example"
configuration_set = "courant-events"

[providers.relay]
kind = "smtp"
host = "smtp.example.com"
security = "starttls"
username = "courant"
password = "s3cret-pass"
from = "noreply@shop.example"
"#;

    #[test]
    fn ses_and_smtp_sections_are_read_validated_and_routed() {
        let config: Config = toml::from_str(EMAIL_PROVIDERS).unwrap();
        let config = config.finish().unwrap();
        let email: Vec<&str> =
            config.policy.routes[&Channel::Email].iter().map(ProviderName::as_str).collect();
        assert_eq!(email, ["relay", "ses"]);
        let breakers = providers::breaker::Registry::default();
        let store = storage::memory::MemoryStore::default();
        let built = build_providers(&config, &store, &breakers).unwrap();
        assert_eq!(built.len(), 2);
        assert!(built.iter().all(|p| p.channel() == Channel::Email));
    }

    #[test]
    fn invalid_ses_and_smtp_sections_are_refused_at_start_up() {
        let plain = EMAIL_PROVIDERS.replace("security = \"starttls\"", "security = \"plain\"");
        let err = format!("{:#}", toml::from_str::<Config>(&plain).unwrap().finish().unwrap_err());
        assert!(err.contains("providers.relay") && err.contains("security"), "{err}");
        let region = EMAIL_PROVIDERS.replace("region = \"eu-west-1\"", "region = \"EU\"");
        let err = format!("{:#}", toml::from_str::<Config>(&region).unwrap().finish().unwrap_err());
        assert!(err.contains("providers.ses") && err.contains("region"), "{err}");
    }
}
