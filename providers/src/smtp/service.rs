//! The SMTP provider: a small pool of authenticated sessions, one transaction per message.
//!
//! The transaction is driven step by step on `lettre`'s connection (rather than through its
//! all-in-one transport) so that every failure is known with its [`Phase`]: that is what tells a
//! retryable failure from an unknown outcome.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use steps::model::{Channel, EmailAddress, ProviderName};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use workflows::ports::{Outbound, Provider};

use super::config::{Security, SmtpConfig};
use super::request::{Built, build};
use super::response::{Failure, Phase, classify};
use crate::{Error, Secret, http, redact};

/// The AUTH mechanisms offered, in order of preference (both send the password as is, which is
/// why `plain` mode is for this host only).
const MECHANISMS: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];

/// Longest CA file read, in bytes.
const CA_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// An idle pooled session.
struct Idle {
    connection: AsyncSmtpConnection,
    since: Instant,
}

/// The SMTP provider.
pub struct Smtp {
    /// The configured name.
    name: ProviderName,
    /// The relay.
    host: String,
    /// Its port.
    port: u16,
    /// How the connection is secured.
    security: Security,
    /// The `EHLO` name.
    hello: ClientId,
    /// The TLS settings (`starttls` and `tls`): webpki roots plus the configured CA.
    tls: Option<TlsParameters>,
    /// The AUTH user name, kept to scrub it from messages.
    username: Option<Secret>,
    /// The AUTH credentials.
    credentials: Option<Credentials>,
    /// `From`.
    from: Mailbox,
    /// Idle sessions, most recent last.
    pool: Mutex<Vec<Idle>>,
    /// Most idle sessions kept.
    pool_max: usize,
    /// How long an idle session is kept.
    pool_idle: Duration,
    /// The send deadline.
    timeout: Duration,
    /// The session deadline (connect to authenticated).
    connect_timeout: Duration,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // By hand: lettre's `Credentials` would print the password.
        f.debug_struct("Smtp")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .field("pool_max", &self.pool_max)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A failure with its description (lettre's, scrubbed later).
type Failed = (Failure, String);

fn failed(error: &lettre::transport::smtp::Error) -> Failed {
    let text = error.to_string();
    let failure = if let Some(code) = error.status() {
        Failure::Reply(code.to_string().parse().unwrap_or(500))
    } else if error.is_timeout() {
        Failure::Timeout
    } else if error.is_tls() || text.contains("invalid peer certificate") {
        // lettre reports a refused certificate during STARTTLS as a connection error; rustls's
        // words for it are the only mark.
        Failure::Tls
    } else if text.contains("incomplete response") {
        // lettre's word for the connection closing before a whole reply came.
        Failure::Network
    } else if error.is_client() || error.is_response() {
        Failure::Protocol
    } else {
        Failure::Network
    };
    (failure, text)
}

impl Smtp {
    /// Builds the provider named `name` from its configuration, after validating it (and reading
    /// `ca_file`). Connects lazily, on the first send.
    pub fn new(name: ProviderName, config: SmtpConfig) -> Result<Self, Error> {
        config.validate(&name)?;
        let provider = name.as_str();
        let tls = match config.security {
            Security::Plain => None,
            Security::Starttls | Security::Tls => {
                let mut builder =
                    TlsParameters::builder(config.host.trim_matches(['[', ']']).to_owned())
                        .certificate_store(CertificateStore::WebpkiRoots);
                if let Some(path) = &config.ca_file {
                    let pem = read_bounded(path).map_err(|e| {
                        Error::config(provider, "ca_file", format!("cannot read: {e}"))
                    })?;
                    let cert = Certificate::from_pem(&pem).map_err(|_| {
                        Error::config(provider, "ca_file", "is not a PEM certificate")
                    })?;
                    builder = builder.add_root_certificate(cert);
                }
                let params = builder.build_rustls().map_err(|e| {
                    Error::config(provider, "security", format!("cannot set up TLS: {e}"))
                })?;
                Some(params)
            }
        };
        let from_address =
            config.from.expose().parse().map_err(|_| {
                Error::config(provider, "from", "is not an address SMTP can send from")
            })?;
        let credentials = match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                Some(Credentials::new(user.expose().to_owned(), password.expose().to_owned()))
            }
            _ => None,
        };
        Ok(Self {
            host: config.host.clone(),
            port: config.port(),
            security: config.security,
            hello: config.hello_name.clone().map_or_else(ClientId::default, ClientId::Domain),
            tls,
            username: config.username,
            credentials,
            from: Mailbox::new(config.from_name, from_address),
            pool: Mutex::new(Vec::new()),
            pool_max: config.pool_max,
            pool_idle: Duration::from_millis(config.pool_idle_ms),
            timeout: Duration::from_millis(config.timeout_ms),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            name,
        })
    }

    /// A ready session: connected, TLS as configured, authenticated.
    async fn connect(&self) -> Result<AsyncSmtpConnection, Failed> {
        let session = async {
            let wrapper = if self.security == Security::Tls { self.tls.clone() } else { None };
            let mut connection = AsyncSmtpConnection::connect_tokio1(
                (self.host.trim_matches(['[', ']']), self.port),
                Some(self.connect_timeout),
                &self.hello,
                wrapper,
                None,
            )
            .await
            .map_err(|e| failed(&e))?;
            if let (Security::Starttls, Some(tls)) = (self.security, &self.tls) {
                // lettre refuses when the relay does not offer STARTTLS: never in clear.
                connection.starttls(tls.clone(), &self.hello).await.map_err(|e| failed(&e))?;
            }
            if let Some(credentials) = &self.credentials {
                connection.auth(&MECHANISMS, credentials).await.map_err(|e| failed(&e))?;
            }
            Ok(connection)
        };
        match tokio::time::timeout(self.connect_timeout, session).await {
            Ok(result) => result,
            Err(_) => Err((
                Failure::Timeout,
                format!("no ready session within {} ms", self.connect_timeout.as_millis()),
            )),
        }
    }

    fn checkout(&self) -> Option<AsyncSmtpConnection> {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(idle) = pool.pop() {
            if idle.since.elapsed() < self.pool_idle && !idle.connection.has_broken() {
                return Some(idle.connection);
            }
        }
        None
    }

    fn checkin(&self, connection: AsyncSmtpConnection) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < self.pool_max {
            pool.push(Idle { connection, since: Instant::now() });
        }
    }

    /// Sends `built`, on a pooled session or a new one. A pooled session the relay closed while
    /// idle fails at `MAIL FROM` without a reply (or with 421); then the message goes once more
    /// on a fresh session, since nothing was taken.
    async fn deliver(&self, built: &Built, phase: &AtomicU8) -> Result<(), Failed> {
        let mut pooled = self.checkout();
        loop {
            phase.store(Phase::Connect.as_u8(), Ordering::Relaxed);
            let reused = pooled.is_some();
            let mut connection = match pooled.take() {
                Some(connection) => connection,
                None => self.connect().await?,
            };
            match transaction(&mut connection, built, phase).await {
                Ok(()) => {
                    self.checkin(connection);
                    return Ok(());
                }
                Err((failure, _))
                    if reused
                        && Phase::from_u8(phase.load(Ordering::Relaxed)) == Phase::Mail
                        && matches!(failure, Failure::Network | Failure::Reply(421)) => {}
                // The session is dropped: after a failure its state is not worth trusting.
                Err(failed) => return Err(failed),
            }
        }
    }

    async fn call(&self, message: &Outbound) -> SendOutcome {
        let built = match build(&self.from, message, SystemTime::now()) {
            Ok(built) => built,
            Err(error) => return SendOutcome::Failed(error),
        };
        let to = message.recipient.email.as_ref().map_or("", EmailAddress::expose);
        let user = self.username.as_ref().map_or("", Secret::expose);
        let phase = AtomicU8::new(Phase::Connect.as_u8());
        let result = tokio::time::timeout(self.timeout, self.deliver(&built, &phase)).await;
        let (failure, detail) = match result {
            Ok(Ok(())) => {
                return SendOutcome::Accepted {
                    provider_message_id: Some(built.message_id),
                    delivered: false,
                };
            }
            Ok(Err(failed)) => failed,
            Err(_) => {
                (Failure::Timeout, format!("no reply within {} ms", self.timeout.as_millis()))
            }
        };
        let phase = Phase::from_u8(phase.load(Ordering::Relaxed));
        let class = classify(phase, failure);
        let code = match failure {
            Failure::Reply(code) => Some(code.to_string()),
            _ => None,
        };
        let note = match class {
            ErrorClass::Unknown => "; the message may have been taken",
            ErrorClass::Retryable { .. } if code.is_none() => "; the message was not sent",
            _ => "",
        };
        let text = format!("{}: {}{note}", phase.name(), redact::scrub(&detail, &[to, user]));
        SendOutcome::Failed(ProviderError::new(class, None, code, &text))
    }
}

/// One transaction on `connection`, recording its phase in `phase`.
async fn transaction(
    connection: &mut AsyncSmtpConnection,
    built: &Built,
    phase: &AtomicU8,
) -> Result<(), Failed> {
    let set = |p: Phase| phase.store(p.as_u8(), Ordering::Relaxed);
    set(Phase::Mail);
    let info = connection.server_info();
    let mut parameters = Vec::new();
    let ascii = |a: &lettre::Address| AsRef::<str>::as_ref(a).is_ascii();
    let utf8_addresses =
        !built.envelope.to().iter().all(ascii) || built.envelope.from().is_some_and(|a| !ascii(a));
    if utf8_addresses {
        if !info.supports_feature(Extension::SmtpUtfEight) {
            return Err((Failure::Protocol, "the relay does not offer SMTPUTF8".into()));
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !built.bytes.is_ascii() {
        if !info.supports_feature(Extension::EightBitMime) {
            return Err((Failure::Protocol, "the relay does not offer 8BITMIME".into()));
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    connection
        .command(Mail::new(built.envelope.from().cloned(), parameters))
        .await
        .map_err(|e| failed(&e))?;
    set(Phase::Rcpt);
    for to in built.envelope.to() {
        connection.command(Rcpt::new(to.clone(), vec![])).await.map_err(|e| failed(&e))?;
    }
    set(Phase::Data);
    connection.command(Data).await.map_err(|e| failed(&e))?;
    set(Phase::Message);
    connection.message(&built.bytes).await.map_err(|e| failed(&e))?;
    Ok(())
}

fn read_bounded(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(CA_FILE_BYTES_MAX).read_to_end(&mut bytes)?;
    Ok(bytes)
}

impl Provider for Smtp {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn channel(&self) -> Channel {
        Channel::Email
    }

    fn send<'a>(&'a self, message: &'a Outbound) -> BoxFuture<'a, SendOutcome> {
        http::instrumented_send(&self.name, message, self.call(message))
    }
}
