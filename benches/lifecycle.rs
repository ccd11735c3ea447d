//! End-to-end throughput of the whole lifecycle on Redis: submit → filter → render → rate check →
//! claim → provider → sent, through the real runner, the real Redis store and queue, apalis
//! workers over `WakeBackend`, and (for email) the real SendGrid client talking to the sandbox.
//!
//! It starts its own `redis-server` (AOF off, like the BullMQ figures it is compared with) and
//! prints notifications per second, Redis commands per notification and Redis CPU per
//! notification. Run it with:
//!
//! ```sh
//! cargo bench --bench lifecycle -- [N] [CHANNEL]     # default 20000 in_app
//! ```
//!
//! A benchmark, not a test: it asserts only that every notification reached its final state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::{BoxDynError, Data, Monitor, WorkerBuilder, WorkerBuilderExt};
use courant::wiring::SystemClock;
use steps::model::{
    Category, Channel, EmailAddress, ProviderName, Recipient, RecipientId, TemplateId, TenantId,
};
use storage::backend::WakeBackend;
use storage::redis::RedisStore;
use storage::testing::RedisServer;
use workflows::policy::Policy;
use workflows::ports::Provider;
use workflows::record::Wake;
use workflows::runner::{Advanced, Runner, Submission};

type BenchRunner = Runner<RedisStore, SystemClock>;

/// Counts notifications that reached a final state.
#[derive(Debug, Default)]
struct Done {
    count: AtomicU64,
}

async fn handle(
    wake: Wake,
    runner: Data<Arc<BenchRunner>>,
    done: Data<Arc<Done>>,
) -> Result<(), BoxDynError> {
    match runner.advance(&wake).await? {
        Advanced::Committed { state, .. } if state.is_terminal() || state.as_str() == "sent" => {
            done.count.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    Ok(())
}

async fn info(
    conn: &mut redis::aio::MultiplexedConnection,
    section: &str,
) -> BTreeMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query_async(conn).await.expect("INFO");
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

async fn redis_cpu_s(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let cpu = info(conn, "cpu").await;
    let get = |k: &str| cpu.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    get("used_cpu_sys") + get("used_cpu_user")
}

async fn redis_calls(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    // `cmdstat_x:calls=N,usec=...`: the sum of calls over every command.
    info(conn, "commandstats")
        .await
        .values()
        .filter_map(|v| v.split(',').next()?.strip_prefix("calls=")?.parse::<u64>().ok())
        .sum()
}

fn process_cpu_s() -> f64 {
    // utime + stime from /proc/self/stat, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let n: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let channel = args.get(1).and_then(|c| Channel::parse(c)).unwrap_or(Channel::InApp);
    let concurrency = 256;

    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let client = redis::Client::open(server.url()).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("conn");

    // The sandbox, in process, answering instantly.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sandbox_url = format!("http://{}", listener.local_addr().expect("addr"));
    let mut sandbox_config = providers::sandbox::SandboxConfig::default();
    sandbox_config.sendgrid.behaviour.latency_ms = 0;
    sandbox_config.twilio.behaviour.latency_ms = 0;
    tokio::spawn(providers::sandbox::serve(listener, sandbox_config, std::future::pending()));
    let (sendgrid, twilio) = providers::sandbox::dev_provider_configs(&sandbox_url);

    let name = |s: &str| ProviderName::new(s).expect("name");
    let providers: Vec<Arc<dyn Provider>> = vec![
        Arc::new(providers::SendGrid::new(name("sendgrid"), sendgrid).expect("sendgrid")),
        Arc::new(providers::Twilio::new(name("twilio"), twilio).expect("twilio")),
        Arc::new(providers::InAppProvider::new(name("inapp"), store.clone())),
    ];
    let mut policy = Policy::default();
    policy.routes.insert(Channel::Email, vec![name("sendgrid")]);
    policy.routes.insert(Channel::Sms, vec![name("twilio")]);
    policy.routes.insert(Channel::InApp, vec![name("inapp")]);
    let templates = courant::templates::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/templates"
    )))
    .expect("templates");
    // As `serve` wires it: the registry in the same store (a submission reads which version is
    // published, one HMGET).
    let runner = Arc::new(
        Runner::new(store.clone(), SystemClock, Arc::new(templates), Arc::new(policy), providers)
            .with_template_store(Arc::new(store.clone())),
    );
    let tenant = TenantId::new("bench").expect("tenant");
    let data =
        serde_json::json!({"name": "Ada", "product": "courant", "order_id": "A-1", "code": "1"});
    let template = match channel {
        Channel::Sms => "otp",
        Channel::Email => "welcome",
        _ => "order_shipped",
    };

    let done = Arc::new(Done::default());
    let cpu_redis_0 = redis_cpu_s(&mut conn).await;
    let calls_0 = redis_calls(&mut conn).await;
    let cpu_self_0 = process_cpu_s();
    let started = Instant::now();

    // Workers.
    let backend = WakeBackend::new(store.clone()).concurrency(concurrency);
    let (worker_runner, worker_done) = (runner.clone(), done.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let monitor = tokio::spawn(async move {
        Monitor::new()
            .register(move |_| {
                WorkerBuilder::new("bench-worker")
                    .backend(backend.clone())
                    .concurrency(concurrency)
                    .data(worker_runner.clone())
                    .data(worker_done.clone())
                    .build(handle)
            })
            .run_with_signal(async move {
                let _ = stop_rx.await;
                Ok(())
            })
            .await
    });

    // Producers: 32 concurrent submitters, each recipient distinct so rate limits do not bite.
    let submitters = 32;
    let mut tasks = Vec::new();
    for s in 0..submitters {
        let runner = runner.clone();
        let tenant = tenant.clone();
        let data = data.as_object().cloned().unwrap_or_default();
        tasks.push(tokio::spawn(async move {
            let mut i = s;
            while i < n {
                let submission = Submission {
                    recipient: Recipient {
                        id: RecipientId::new(format!("r{i}")).expect("id"),
                        email: EmailAddress::parse("bench@example.com").ok(),
                        phone: steps::model::PhoneNumber::parse("+14155550123").ok(),
                        opt_out: vec![],
                    },
                    channel,
                    template: TemplateId::new(template).expect("template"),
                    data: data.clone(),
                    category: Category::new("bench").expect("category"),
                    locale: None,
                    correlation: Default::default(),
                };
                let id = storage::keys::new_notification_id(
                    &tenant,
                    None,
                    &ulid::Ulid::generate().to_string(),
                );
                runner.submit(&tenant, id, submission, None).await.expect("submit");
                i += submitters;
            }
        }));
    }
    for task in tasks {
        task.await.expect("submitter");
    }
    let submitted_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while done.count.load(Ordering::Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} finished",
            done.count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let cpu_redis = redis_cpu_s(&mut conn).await - cpu_redis_0;
    let calls = redis_calls(&mut conn).await - calls_0;
    let cpu_self = process_cpu_s() - cpu_self_0;
    let mut stats: Vec<(String, u64, u64)> = info(&mut conn, "commandstats")
        .await
        .into_iter()
        .filter_map(|(k, v)| {
            let mut parts = v.split(',');
            let calls = parts.next()?.strip_prefix("calls=")?.parse().ok()?;
            let usec = parts.next()?.strip_prefix("usec=")?.parse().ok()?;
            Some((k.trim_start_matches("cmdstat_").to_owned(), calls, usec))
        })
        .collect();
    stats.sort_by_key(|(_, _, usec)| std::cmp::Reverse(*usec));
    let _ = stop_tx.send(());
    let _ = monitor.await;

    let rate = n as f64 / elapsed.as_secs_f64();
    println!("channel            {channel}");
    println!("notifications      {n}");
    println!("submitted in       {:.2} s", submitted_in.as_secs_f64());
    println!("all final in       {:.2} s", elapsed.as_secs_f64());
    println!("end-to-end rate    {rate:.0} notifications/s");
    println!("redis commands     {:.1} per notification", calls as f64 / n as f64);
    println!("redis cpu          {:.1} µs per notification", cpu_redis * 1e6 / n as f64);
    println!(
        "courant cpu        {:.1} µs per notification (API-less: runner, workers, sandbox)",
        cpu_self * 1e6 / n as f64
    );
    println!("top redis commands (calls and µs per notification; scripts include their commands):");
    for (name, c, usec) in stats.iter().take(12) {
        println!(
            "  {name:<22} {:>6.2} calls {:>7.1} µs",
            *c as f64 / n as f64,
            *usec as f64 / n as f64
        );
    }
    println!(
        "| {channel} | {n} | {rate:.0} | {:.1} | {:.1} | {:.1} |",
        calls as f64 / n as f64,
        cpu_redis * 1e6 / n as f64,
        cpu_self * 1e6 / n as f64
    );
}
