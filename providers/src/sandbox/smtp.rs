//! A local SMTP relay for dev mode's SMTP provider: plain text on this host, AUTH PLAIN/LOGIN
//! with the sandbox's credentials, one message kept per transaction.
//!
//! It speaks enough RFC 5321 for a submission client: `EHLO`/`HELO`, `AUTH`, `MAIL`, `RCPT`,
//! `DATA`, `RSET`, `NOOP`, `QUIT`, with the usual replies (`530` before AUTH, `535` for wrong
//! credentials, `553` for a bad address, `552` for an oversized message). A transaction is one
//! request for the stats and draws its latency and fault at `MAIL FROM`; the fault shows at the
//! end of `DATA`: `451` for a server error, `451 4.7.1` for rate limiting, and a hang that keeps
//! the message but replies late. No TLS: [`crate::smtp::Security::Plain`] only talks to this host.

use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use steps::model::EmailAddress;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{BODY_BYTES_MAX, Counted, Fault, Sandbox, SandboxMessage, SandboxProvider, now_ms};

const PROVIDER: SandboxProvider = SandboxProvider::Smtp;

/// Longest command line, CRLF included (RFC 5321 4.5.3.1.4 allows 512; AUTH lines are longer).
const LINE_BYTES_MAX: usize = 2_048;

/// Most recipients per transaction (RFC 5321 4.5.3.1.8's minimum).
const RECIPIENTS_MAX: usize = 100;

/// How long a session may stay silent before it is closed.
const IDLE_SECS: u64 = 60;

/// Serves SMTP on `listener` with `sandbox`'s credentials, behaviour and message store, until the
/// sandbox shuts down.
pub async fn serve_smtp(listener: TcpListener, sandbox: Sandbox) {
    let mut shutdown = sandbox.shared.shutdown.subscribe();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "Provider sandbox SMTP listening.");
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                let sandbox = sandbox.clone();
                tokio::spawn(async move {
                    let _ = Session::new(sandbox).run(socket).await;
                });
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// One open transaction.
#[derive(Debug)]
struct Transaction {
    from: String,
    to: Vec<String>,
    delay: Duration,
    fault: Option<Fault>,
}

struct Session {
    sandbox: Sandbox,
    authenticated: bool,
    transaction: Option<Transaction>,
}

type Reader = BufReader<TcpStream>;

async fn say(stream: &mut Reader, reply: &str) -> std::io::Result<()> {
    stream.get_mut().write_all(format!("{reply}\r\n").as_bytes()).await
}

/// Reads one line (CRLF removed); `None` at the end of the stream, when idle too long or when the
/// line is longer than [`LINE_BYTES_MAX`].
async fn line(stream: &mut Reader) -> std::io::Result<Option<String>> {
    let mut buffer = Vec::new();
    let mut limited = (&mut *stream).take(LINE_BYTES_MAX as u64);
    let read = limited.read_until(b'\n', &mut buffer);
    match tokio::time::timeout(Duration::from_secs(IDLE_SECS), read).await {
        Ok(Ok(0)) | Err(_) => Ok(None),
        // A line longer than the limit: the client is not speaking SMTP; hang up.
        Ok(Ok(_)) if !buffer.ends_with(b"\n") => Ok(None),
        Ok(Ok(_)) => {
            let text = String::from_utf8_lossy(&buffer);
            Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
        }
        Ok(Err(error)) => Err(error),
    }
}

/// The address inside `FROM:<a>` / `TO:<a>` (parameters after it ignored).
fn path_of<'a>(argument: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = argument.get(..prefix.len()).filter(|p| p.eq_ignore_ascii_case(prefix))?;
    let rest = argument[rest.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    Some(&rest[..rest.find('>')?])
}

impl Session {
    fn new(sandbox: Sandbox) -> Self {
        Session { sandbox, authenticated: false, transaction: None }
    }

    fn credentials_ok(&self, user: &[u8], password: &[u8]) -> bool {
        let shared = &self.sandbox.shared;
        let user_ok = user.ct_eq(shared.smtp_username.as_bytes());
        let password_ok = password.ct_eq(shared.smtp_password.expose().as_bytes());
        bool::from(user_ok & password_ok)
    }

    /// Ends an open transaction that never completed, so every request is counted once.
    fn abandon(&mut self) {
        if self.transaction.take().is_some() {
            self.sandbox.count(PROVIDER, Counted::Invalid);
        }
    }

    async fn run(mut self, socket: TcpStream) -> std::io::Result<()> {
        let mut stream = BufReader::new(socket);
        say(&mut stream, "220 sandbox.courant ESMTP courant sandbox").await?;
        loop {
            let Some(command) = line(&mut stream).await? else {
                self.abandon();
                return Ok(());
            };
            let (verb, argument) = command.split_once(' ').unwrap_or((&command, ""));
            match verb.to_ascii_uppercase().as_str() {
                "EHLO" => {
                    say(
                        &mut stream,
                        &format!(
                            "250-sandbox.courant\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
                             250-SIZE {BODY_BYTES_MAX}\r\n250 AUTH PLAIN LOGIN"
                        ),
                    )
                    .await?;
                }
                "HELO" => say(&mut stream, "250 sandbox.courant").await?,
                "AUTH" => {
                    let reply = self.auth(&mut stream, argument).await?;
                    say(&mut stream, reply).await?;
                }
                "MAIL" => {
                    let reply = self.mail(argument);
                    say(&mut stream, reply).await?;
                }
                "RCPT" => {
                    let reply = self.rcpt(argument);
                    say(&mut stream, reply).await?;
                }
                "DATA" => self.data(&mut stream).await?,
                "RSET" => {
                    self.abandon();
                    say(&mut stream, "250 2.0.0 Ok").await?;
                }
                "NOOP" => say(&mut stream, "250 2.0.0 Ok").await?,
                "QUIT" => {
                    self.abandon();
                    say(&mut stream, "221 2.0.0 Bye").await?;
                    return Ok(());
                }
                _ => say(&mut stream, "502 5.5.2 Error: command not recognized").await?,
            }
        }
    }

    async fn auth(&mut self, stream: &mut Reader, argument: &str) -> std::io::Result<&'static str> {
        let decode = |s: &str| base64::engine::general_purpose::STANDARD.decode(s.trim()).ok();
        let (mechanism, initial) = argument.split_once(' ').unwrap_or((argument, ""));
        let accepted = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let token = if initial.is_empty() {
                    say(stream, "334 ").await?;
                    line(stream).await?.unwrap_or_default()
                } else {
                    initial.to_owned()
                };
                // authzid \0 authcid \0 password
                decode(&token).is_some_and(|bytes| {
                    let parts: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
                    parts.len() == 3 && self.credentials_ok(parts[1], parts[2])
                })
            }
            "LOGIN" => {
                say(stream, "334 VXNlcm5hbWU6").await?;
                let user = line(stream).await?.and_then(|l| decode(&l)).unwrap_or_default();
                say(stream, "334 UGFzc3dvcmQ6").await?;
                let password = line(stream).await?.and_then(|l| decode(&l)).unwrap_or_default();
                self.credentials_ok(&user, &password)
            }
            _ => return Ok("504 5.5.4 Unrecognized authentication type"),
        };
        // A failed AUTH is a request of its own for the stats.
        if accepted {
            self.authenticated = true;
            Ok("235 2.7.0 Authentication successful")
        } else {
            let _ = self.sandbox.admit(PROVIDER);
            self.sandbox.count(PROVIDER, Counted::Unauthorized);
            Ok("535 5.7.8 Error: authentication failed")
        }
    }

    fn mail(&mut self, argument: &str) -> &'static str {
        if self.transaction.is_some() {
            return "503 5.5.1 Error: nested MAIL command";
        }
        let (delay, fault) = self.sandbox.admit(PROVIDER);
        if !self.authenticated {
            self.sandbox.count(PROVIDER, Counted::Unauthorized);
            return "530 5.7.0 Authentication required";
        }
        let Some(from) = path_of(argument, "FROM:") else {
            self.sandbox.count(PROVIDER, Counted::Invalid);
            return "501 5.5.4 Syntax: MAIL FROM:<address>";
        };
        self.transaction = Some(Transaction { from: from.to_owned(), to: vec![], delay, fault });
        "250 2.1.0 Ok"
    }

    fn rcpt(&mut self, argument: &str) -> &'static str {
        let Some(transaction) = &mut self.transaction else {
            return "503 5.5.1 Error: need MAIL command";
        };
        if transaction.to.len() >= RECIPIENTS_MAX {
            return "452 4.5.3 Error: too many recipients";
        }
        match path_of(argument, "TO:") {
            Some(to) if EmailAddress::parse(to).is_ok() => {
                transaction.to.push(to.to_owned());
                "250 2.1.5 Ok"
            }
            _ => "553 5.1.3 Error: malformed address",
        }
    }

    async fn data(&mut self, stream: &mut Reader) -> std::io::Result<()> {
        if self.transaction.as_ref().is_none_or(|t| t.to.is_empty()) {
            return say(stream, "554 5.5.1 Error: no valid recipients").await;
        }
        say(stream, "354 End data with <CR><LF>.<CR><LF>").await?;
        let mut data = String::new();
        let mut too_large = false;
        loop {
            let Some(text) = line(stream).await? else {
                self.abandon();
                return Ok(());
            };
            if text == "." {
                break;
            }
            let text = text.strip_prefix('.').filter(|_| text.starts_with("..")).unwrap_or(&text);
            if data.len() + text.len() + 2 > BODY_BYTES_MAX {
                too_large = true;
            } else {
                data.push_str(text);
                data.push_str("\r\n");
            }
        }
        let Some(transaction) = self.transaction.take() else { return Ok(()) };
        if too_large {
            self.sandbox.count(PROVIDER, Counted::Invalid);
            return say(stream, "552 5.3.4 Error: message file too big").await;
        }
        tokio::time::sleep(transaction.delay).await;
        match transaction.fault {
            Some(Fault::ServerError(_)) => {
                self.sandbox.count(PROVIDER, Counted::ServerError);
                say(stream, "451 4.3.0 Error: queue file write error").await
            }
            Some(Fault::RateLimited(_)) => {
                self.sandbox.count(PROVIDER, Counted::RateLimited);
                say(stream, "451 4.7.1 Error: too many messages, slow down").await
            }
            Some(Fault::Hang(duration)) => {
                let id = self.take(transaction, data, false);
                self.sandbox.count(PROVIDER, Counted::Hung);
                self.sandbox.hang(duration).await;
                say(stream, &format!("250 2.0.0 Ok: queued as {id}")).await
            }
            None => {
                let id = self.take(transaction, data, true);
                self.sandbox.count(PROVIDER, Counted::Accepted);
                say(stream, &format!("250 2.0.0 Ok: queued as {id}")).await
            }
        }
    }

    /// Records the message and returns its queue id.
    fn take(&self, transaction: Transaction, data: String, answered: bool) -> String {
        let header = |name: &str| {
            let head = data.split("\r\n\r\n").next().unwrap_or("");
            head.split("\r\n").find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
            })
        };
        let message_id = header("Message-ID")
            .map(|id| id.trim_matches(['<', '>']).to_owned())
            .unwrap_or_else(|| self.sandbox.sendgrid_message_id());
        let message = SandboxMessage {
            message_id: message_id.clone(),
            received_at_ms: now_ms(),
            to: transaction.to.first().cloned().unwrap_or_default(),
            notification_id: header(crate::smtp::NOTIFICATION_ID_HEADER),
            answered,
            request: json!({
                "mail_from": transaction.from,
                "rcpt_to": transaction.to,
                "data": data,
            }),
        };
        self.sandbox.record(PROVIDER, message);
        message_id
    }
}

/// An SMTP provider config pointing at a sandbox SMTP listener on `port` of this host with its
/// default credentials, for `courant dev`: plain text (this host only), from
/// `courant@dev.example`.
pub fn dev_smtp_config(port: u16) -> crate::smtp::SmtpConfig {
    crate::smtp::SmtpConfig {
        host: "127.0.0.1".to_owned(),
        port: Some(port),
        security: crate::smtp::Security::Plain,
        username: crate::Secret::new(super::SMTP_USERNAME_DEFAULT).ok(),
        password: Some(super::config::smtp_password_default()),
        from: EmailAddress::parse("courant@dev.example")
            .unwrap_or_else(|_| unreachable!("a valid constant")),
        from_name: Some("courant dev".to_owned()),
        hello_name: Some("courant.dev".to_owned()),
        ca_file: None,
        pool_max: crate::smtp::POOL_MAX_DEFAULT,
        pool_idle_ms: crate::smtp::POOL_IDLE_MS_DEFAULT,
        timeout_ms: crate::options::TIMEOUT_MS_DEFAULT,
        connect_timeout_ms: crate::options::CONNECT_TIMEOUT_MS_DEFAULT,
    }
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use steps::model::ProviderName;
    use steps::outcome::{ErrorClass, SendOutcome};
    use steps::render::Content;
    use workflows::ports::Provider;

    use super::super::{Behaviour, SandboxConfig};
    use super::*;
    use crate::testing::message;

    async fn start() -> (u16, Sandbox) {
        let mut config = SandboxConfig { seed: Some(7), ..SandboxConfig::default() };
        config.smtp.behaviour = Behaviour { latency_ms: 0, ..Behaviour::default() };
        let sandbox = Sandbox::new(config).expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(serve_smtp(listener, sandbox.clone()));
        (port, sandbox)
    }

    fn smtp(config: crate::smtp::SmtpConfig) -> crate::smtp::Smtp {
        crate::smtp::Smtp::new(ProviderName::new("smtp").expect("id"), config).expect("builds")
    }

    fn email() -> Content {
        Content::Email {
            subject: "Hi".into(),
            html: Some("<p>Hi</p>".into()),
            text: Some("Hi".into()),
        }
    }

    fn failure(outcome: SendOutcome) -> steps::outcome::ProviderError {
        match outcome {
            SendOutcome::Failed(error) => error,
            accepted => panic!("expected a failure, got {accepted:?}"),
        }
    }

    #[tokio::test]
    async fn the_smtp_provider_delivers_to_the_sandbox_listener() {
        let (port, sandbox) = start().await;
        let outcome = smtp(dev_smtp_config(port)).send(&message(email())).await;
        assert_eq!(
            outcome,
            SendOutcome::Accepted {
                provider_message_id: Some("n_01HZX3V4.2.acme@dev.example".into()),
                delivered: false
            }
        );
        let kept = sandbox.messages(SandboxProvider::Smtp);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].message_id, "n_01HZX3V4.2.acme@dev.example");
        assert_eq!(kept[0].notification_id.as_deref(), Some("n_01HZX3V4"));
        assert_eq!(kept[0].to, crate::testing::TO_EMAIL);
        assert_eq!(kept[0].request["mail_from"], "courant@dev.example");
        assert!(kept[0].request["data"].as_str().unwrap_or("").contains("multipart/alternative"));
        let stats = sandbox.stats();
        assert_eq!((stats.smtp.received, stats.smtp.accepted), (1, 1));
    }

    #[tokio::test]
    async fn the_sandbox_listener_refuses_and_fails_like_a_relay() {
        let (port, sandbox) = start().await;
        let mut wrong = dev_smtp_config(port);
        wrong.password = crate::Secret::new("wrong-password").ok();
        let e = failure(smtp(wrong).send(&message(email())).await);
        assert_eq!(e.class, ErrorClass::ProviderConfig, "{e}");
        assert_eq!(e.code.as_deref(), Some("535"));

        let failing = Behaviour { server_error_rate: 1.0, latency_ms: 0, ..Behaviour::default() };
        sandbox.set_behaviour(SandboxProvider::Smtp, failing).expect("valid");
        let e = failure(smtp(dev_smtp_config(port)).send(&message(email())).await);
        assert_eq!(e.class, ErrorClass::RETRYABLE, "{e}");
        assert_eq!(e.code.as_deref(), Some("451"));

        let hanging =
            Behaviour { hang_rate: 1.0, hang_ms: 2_000, latency_ms: 0, ..Behaviour::default() };
        sandbox.set_behaviour(SandboxProvider::Smtp, hanging).expect("valid");
        let mut config = dev_smtp_config(port);
        config.timeout_ms = 500;
        config.connect_timeout_ms = 400;
        let e = failure(smtp(config).send(&message(email())).await);
        assert_eq!(e.class, ErrorClass::Unknown, "{e}");
        // The hung message was kept: it may well have been delivered.
        assert_eq!(sandbox.messages(SandboxProvider::Smtp).len(), 1);

        let stats = sandbox.stats();
        assert_eq!(stats.smtp.failed.unauthorized, 1);
        assert_eq!(stats.smtp.failed.server_error, 1);
        assert_eq!(stats.smtp.failed.hung, 1);
        assert_eq!(stats.smtp.received, stats.smtp.accepted + stats.smtp.failed.total());
    }

    #[tokio::test]
    async fn mail_before_auth_is_refused() {
        let (port, _sandbox) = start().await;
        let socket = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let mut stream = BufReader::new(socket);
        assert!(line(&mut stream).await.expect("greeting").expect("line").starts_with("220 "));
        say(&mut stream, "MAIL FROM:<a@example.com>").await.expect("write");
        assert_eq!(
            line(&mut stream).await.expect("reply").as_deref(),
            Some("530 5.7.0 Authentication required")
        );
    }
}
