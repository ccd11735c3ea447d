//! SMTP: the classification of replies by phase, the config and (with feature `http`) the real
//! dialogue against a local SMTP server started by the test: plain, STARTTLS and implicit TLS with
//! a certificate generated for the test, scripted error replies and lost connections.

use steps::model::ProviderName;
use steps::outcome::ErrorClass;

use super::response::{Failure, Phase, classify};
use super::*;

/// Every documented reply code at the step where relays send it, and every failure without a
/// reply, with its class.
#[test]
fn replies_and_failures_are_classified_by_phase() {
    use Failure::{Network, Protocol, Reply, Timeout, Tls};
    use Phase::{Connect, Data, Mail, Message, Rcpt};
    let retryable = ErrorClass::RETRYABLE;
    let config = ErrorClass::ProviderConfig;
    let permanent = ErrorClass::PermanentRecipient;
    let table: &[(Phase, Failure, ErrorClass)] = &[
        // 4xx: transient, whatever the step.
        (Connect, Reply(421), retryable),
        (Connect, Reply(454), retryable),
        (Mail, Reply(421), retryable),
        (Mail, Reply(451), retryable),
        (Mail, Reply(452), retryable),
        (Rcpt, Reply(450), retryable),
        (Rcpt, Reply(451), retryable),
        (Rcpt, Reply(452), retryable),
        (Data, Reply(451), retryable),
        (Message, Reply(450), retryable),
        (Message, Reply(451), retryable),
        (Message, Reply(452), retryable),
        // Authentication: our configuration.
        (Connect, Reply(530), config),
        (Connect, Reply(534), config),
        (Connect, Reply(535), config),
        (Connect, Reply(538), config),
        (Mail, Reply(530), config),
        (Rcpt, Reply(530), config),
        // Refusals while connecting (greeting 554, EHLO 501/502).
        (Connect, Reply(554), config),
        (Connect, Reply(550), config),
        (Connect, Reply(501), config),
        // Our sender refused; the message too large for the relay.
        (Mail, Reply(550), config),
        (Mail, Reply(553), config),
        (Mail, Reply(552), permanent),
        (Mail, Reply(555), config),
        // The recipient refused.
        (Rcpt, Reply(550), permanent),
        (Rcpt, Reply(551), permanent),
        (Rcpt, Reply(552), permanent),
        (Rcpt, Reply(553), permanent),
        (Rcpt, Reply(554), permanent),
        // The message refused.
        (Data, Reply(554), permanent),
        (Message, Reply(550), permanent),
        (Message, Reply(552), permanent),
        (Message, Reply(554), permanent),
        // Syntax and sequence errors: client and relay disagree.
        (Mail, Reply(500), config),
        (Rcpt, Reply(503), config),
        (Data, Reply(503), config),
        (Message, Reply(500), config),
        // No reply: before the content, nothing was taken; after it, maybe.
        (Connect, Network, retryable),
        (Connect, Timeout, retryable),
        (Mail, Network, retryable),
        (Rcpt, Timeout, retryable),
        (Data, Network, retryable),
        (Message, Network, ErrorClass::Unknown),
        (Message, Timeout, ErrorClass::Unknown),
        (Connect, Tls, config),
        (Connect, Protocol, config),
        (Mail, Protocol, config),
        (Message, Protocol, ErrorClass::Unknown),
    ];
    for (phase, failure, class) in table {
        assert_eq!(classify(*phase, *failure), *class, "{failure:?} at {}", phase.name());
    }
}

const CONFIG: &str = r#"
host = "smtp.example.com"
security = "starttls"
username = "courant"
password = "s3cret-pass"
from = "noreply@shop.example"
from_name = "Shop"
"#;

fn name() -> ProviderName {
    ProviderName::new("smtp").expect("id")
}

#[test]
fn config_reads_from_toml_with_defaults() {
    let config: SmtpConfig = toml::from_str(CONFIG).expect("parses");
    assert_eq!(config.security, Security::Starttls);
    assert_eq!(config.port(), 587);
    assert_eq!(config.pool_max, POOL_MAX_DEFAULT);
    assert_eq!(config.pool_idle_ms, POOL_IDLE_MS_DEFAULT);
    assert_eq!((config.timeout_ms, config.connect_timeout_ms), (10_000, 3_000));
    assert!(config.validate(&name()).is_ok());
    let tls: SmtpConfig =
        toml::from_str(&CONFIG.replace("\"starttls\"", "\"tls\"")).expect("parses");
    assert_eq!(tls.port(), 465);
}

#[test]
fn config_rejects_unknown_fields_and_bad_values() {
    assert!(toml::from_str::<SmtpConfig>(&format!("{CONFIG}\nhots = \"x\"\n")).is_err());
    assert!(toml::from_str::<SmtpConfig>(&CONFIG.replace("starttls", "ssl")).is_err());
    let cases: [(&str, &str, &str); 6] = [
        // Plain text over a network: refused.
        ("security = \"starttls\"", "security = \"plain\"", "security"),
        ("password = \"s3cret-pass\"", "", "password"),
        ("host = \"smtp.example.com\"", "host = \"smtp example\"", "host"),
        ("from_name = \"Shop\"", "from_name = \"Shop\\r\\nBcc: x@y.z\"", "from_name"),
        ("from_name = \"Shop\"", "pool_max = 0", "pool_max"),
        ("from_name = \"Shop\"", "pool_idle_ms = 10", "pool_idle_ms"),
    ];
    for (from, to, field) in cases {
        let config: SmtpConfig = toml::from_str(&CONFIG.replace(from, to)).expect("parses");
        let error = config.validate(&name()).expect_err(field);
        assert!(error.to_string().contains(field), "{error}");
    }
    let local = CONFIG
        .replace("security = \"starttls\"", "security = \"plain\"")
        .replace("smtp.example.com", "127.0.0.1");
    let config: SmtpConfig = toml::from_str(&local).expect("parses");
    assert!(config.validate(&name()).is_ok());
    assert_eq!(config.port(), 25);
}

#[test]
fn config_debug_hides_the_credentials() {
    let config: SmtpConfig = toml::from_str(CONFIG).expect("parses");
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(!debug.contains("courant\""), "{debug}");
}

#[cfg(feature = "http")]
mod live {
    use std::sync::Arc;
    use std::time::Duration;

    use base64::Engine as _;
    use steps::outcome::SendOutcome;
    use steps::render::Content;
    use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use workflows::ports::Provider;

    use super::*;
    use crate::testing::{TO_EMAIL, message};

    /// What the server does after the final `.` of `DATA`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum AfterData {
        /// Reply (the scripted `END` reply or `250`).
        Reply,
        /// Reply, then close the session (a relay dropping idle clients).
        ReplyAndClose,
        /// Close without replying: the message was taken, the answer lost.
        Drop,
        /// Never reply.
        Hang,
    }

    /// How the test server behaves.
    #[derive(Clone)]
    struct Script {
        /// Replies replacing the defaults, by step: `GREETING`, `EHLO`, `AUTH`, `MAIL`, `RCPT`,
        /// `DATA`, `END` (the reply to the final `.`).
        replies: Vec<(&'static str, &'static str)>,
        /// Offer `STARTTLS` with this server config.
        starttls: Option<Arc<rustls::ServerConfig>>,
        /// Speak TLS from the first byte with this server config.
        implicit_tls: Option<Arc<rustls::ServerConfig>>,
        after_data: AfterData,
    }

    impl Script {
        fn plain() -> Self {
            Script {
                replies: vec![],
                starttls: None,
                implicit_tls: None,
                after_data: AfterData::Reply,
            }
        }

        fn reply(mut self, step: &'static str, reply: &'static str) -> Self {
            self.replies.push((step, reply));
            self
        }

        fn answer(&self, step: &str, default: &'static str) -> &'static str {
            self.replies.iter().find(|(s, _)| *s == step).map_or(default, |(_, r)| r)
        }
    }

    /// What the server saw, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        /// A new session.
        Connected,
        /// A command line, without CRLF.
        Line(String),
        /// TLS is up (after `STARTTLS`).
        Tls,
        /// The content between `DATA` and the final `.`, dot-unstuffed, CRLF kept.
        Data(String),
    }

    trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

    /// Starts an SMTP server on 127.0.0.1 following `script`; returns its port and what it saw.
    async fn serve(script: Script) -> (u16, mpsc::UnboundedReceiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (script, tx) = (script.clone(), tx.clone());
                tokio::spawn(async move {
                    let _ = tx.send(Seen::Connected);
                    let stream: Box<dyn Stream> = match &script.implicit_tls {
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                            match acceptor.accept(socket).await {
                                Ok(tls) => Box::new(tls),
                                Err(_) => return,
                            }
                        }
                        None => Box::new(socket),
                    };
                    let _ = session(BufReader::new(stream), &script, &tx).await;
                });
            }
        });
        (port, rx)
    }

    async fn session(
        mut stream: BufReader<Box<dyn Stream>>,
        script: &Script,
        tx: &mpsc::UnboundedSender<Seen>,
    ) -> std::io::Result<()> {
        async fn say(stream: &mut BufReader<Box<dyn Stream>>, reply: &str) -> std::io::Result<()> {
            stream.get_mut().write_all(format!("{reply}\r\n").as_bytes()).await?;
            stream.get_mut().flush().await
        }
        let greeting = script.answer("GREETING", "220 test.local ESMTP ready");
        say(&mut stream, greeting).await?;
        if !greeting.starts_with('2') {
            return Ok(());
        }
        let mut tls = script.implicit_tls.is_some();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end_matches(['\r', '\n']).to_owned();
            let _ = tx.send(Seen::Line(line.clone()));
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            let verb = if verb.starts_with("MAIL") {
                "MAIL".into()
            } else if verb.starts_with("RCPT") {
                "RCPT".into()
            } else {
                verb
            };
            match verb.as_str() {
                "EHLO" => {
                    let starttls =
                        if script.starttls.is_some() && !tls { "250-STARTTLS\r\n" } else { "" };
                    let reply = script.answer(
                        "EHLO",
                        "250-test.local\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n{STARTTLS}250 AUTH PLAIN LOGIN",
                    );
                    say(&mut stream, &reply.replace("{STARTTLS}", starttls)).await?;
                }
                "STARTTLS" => {
                    let Some(config) = &script.starttls else {
                        say(&mut stream, "502 5.5.1 not offered").await?;
                        continue;
                    };
                    say(&mut stream, "220 2.0.0 Ready to start TLS").await?;
                    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                    let upgraded = acceptor.accept(stream.into_inner()).await?;
                    let _ = tx.send(Seen::Tls);
                    stream = BufReader::new(Box::new(upgraded));
                    tls = true;
                }
                "AUTH" => {
                    say(&mut stream, script.answer("AUTH", "235 2.7.0 Authentication successful"))
                        .await?
                }
                "MAIL" => say(&mut stream, script.answer("MAIL", "250 2.1.0 Ok")).await?,
                "RCPT" => say(&mut stream, script.answer("RCPT", "250 2.1.5 Ok")).await?,
                "DATA" => {
                    let reply = script.answer("DATA", "354 End data with <CR><LF>.<CR><LF>");
                    say(&mut stream, reply).await?;
                    if !reply.starts_with('3') {
                        continue;
                    }
                    let mut data = String::new();
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await? == 0 {
                            return Ok(());
                        }
                        if line == ".\r\n" {
                            break;
                        }
                        data.push_str(
                            line.strip_prefix('.')
                                .filter(|_| line.starts_with(".."))
                                .unwrap_or(&line),
                        );
                    }
                    let _ = tx.send(Seen::Data(data));
                    match script.after_data {
                        AfterData::Reply => {
                            say(&mut stream, script.answer("END", "250 2.0.0 Ok: queued as 4BX1T"))
                                .await?
                        }
                        AfterData::ReplyAndClose => {
                            say(&mut stream, script.answer("END", "250 2.0.0 Ok: queued as 4BX1T"))
                                .await?;
                            return Ok(());
                        }
                        AfterData::Drop => return Ok(()),
                        AfterData::Hang => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            return Ok(());
                        }
                    }
                }
                "QUIT" => {
                    say(&mut stream, "221 2.0.0 Bye").await?;
                    return Ok(());
                }
                "NOOP" | "RSET" => say(&mut stream, "250 2.0.0 Ok").await?,
                _ => say(&mut stream, "502 5.5.2 Error: command not recognized").await?,
            }
        }
    }

    /// A certificate for 127.0.0.1, made now: the server's config and the PEM to trust.
    fn test_certificate() -> (Arc<rustls::ServerConfig>, String) {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("certificate");
        let cert = certified.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .expect("key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server config");
        (Arc::new(config), certified.cert.pem())
    }

    fn email(html: Option<&str>, text: Option<&str>) -> Content {
        Content::Email {
            subject: "Your order shipped".into(),
            html: html.map(str::to_owned),
            text: text.map(str::to_owned),
        }
    }

    fn local_config(port: u16, security: Security) -> SmtpConfig {
        let mut config: SmtpConfig = toml::from_str(CONFIG).expect("parses");
        config.host = "127.0.0.1".into();
        config.port = Some(port);
        config.security = security;
        config.hello_name = Some("courant.test".into());
        config.timeout_ms = 3_000;
        config.connect_timeout_ms = 2_000;
        config
    }

    fn smtp(config: SmtpConfig) -> Smtp {
        Smtp::new(name(), config).expect("builds")
    }

    fn drain(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
        let mut all = Vec::new();
        while let Ok(item) = seen.try_recv() {
            all.push(item);
        }
        all
    }

    fn lines(seen: &[Seen]) -> Vec<String> {
        seen.iter()
            .filter_map(|s| match s {
                Seen::Line(line) => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    fn data(seen: &[Seen]) -> String {
        seen.iter()
            .find_map(|s| match s {
                Seen::Data(data) => Some(data.clone()),
                _ => None,
            })
            .expect("a message was sent")
    }

    /// `user\0pass` as AUTH PLAIN sends it.
    fn auth_plain() -> String {
        let token = base64::engine::general_purpose::STANDARD.encode("\0courant\0s3cret-pass");
        format!("AUTH PLAIN {token}")
    }

    async fn send(smtp: &Smtp, content: Content) -> SendOutcome {
        smtp.send(&message(content)).await
    }

    fn failure(outcome: SendOutcome) -> steps::outcome::ProviderError {
        match outcome {
            SendOutcome::Failed(error) => error,
            accepted => panic!("expected a failure, got {accepted:?}"),
        }
    }

    #[tokio::test]
    async fn sends_the_documented_dialogue_and_message_and_reuses_the_session() {
        let (port, mut seen) = serve(Script::plain()).await;
        let smtp = smtp(local_config(port, Security::Plain));
        let outcome = send(&smtp, email(Some("<p>Shipped</p>"), Some("Shipped"))).await;
        assert_eq!(
            outcome,
            SendOutcome::Accepted {
                provider_message_id: Some("n_01HZX3V4.2.acme@shop.example".into()),
                delivered: false
            }
        );
        let first = drain(&mut seen);
        assert_eq!(first[0], Seen::Connected);
        assert_eq!(
            lines(&first),
            [
                "EHLO courant.test".to_owned(),
                auth_plain(),
                "MAIL FROM:<noreply@shop.example>".to_owned(),
                format!("RCPT TO:<{TO_EMAIL}>"),
                "DATA".to_owned(),
            ]
        );
        let data = data(&first);
        let (head, body) = data.split_once("\r\n\r\n").expect("headers, then body");
        let unfolded = head.replace("\r\n ", " ");
        let headers: Vec<&str> = unfolded.split("\r\n").collect();
        let boundary = headers
            .iter()
            .find_map(|h| h.split_once("boundary=\"").map(|(_, b)| b.trim_end_matches('"')))
            .expect("a boundary");
        let date = headers.iter().find(|h| h.starts_with("Date: ")).expect("a Date header");
        assert!(date.ends_with(" +0000"), "{date}");
        let mut expected = vec![
            "From: Shop <noreply@shop.example>".to_owned(),
            format!("To: {TO_EMAIL}"),
            "Subject: Your order shipped".to_owned(),
            (*date).to_owned(),
            "Message-ID: <n_01HZX3V4.2.acme@shop.example>".to_owned(),
            "X-Courant-Notification-Id: n_01HZX3V4".to_owned(),
            "MIME-Version: 1.0".to_owned(),
            format!("Content-Type: multipart/alternative; boundary=\"{boundary}\""),
        ];
        let mut actual: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
        actual.sort();
        expected.sort();
        assert_eq!(actual, expected);
        assert_eq!(
            body,
            format!(
                "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 7bit\r\n\r\nShipped\r\n\
                 --{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 7bit\r\n\r\n<p>Shipped</p>\r\n\
                 --{boundary}--\r\n\r\n"
            )
        );
        // (The last CRLF is the one that starts the terminating CRLF.CRLF: lettre always writes
        // it, so a message ending in CRLF gets one empty line more, which MIME ignores.)

        // The next message goes on the pooled session: no new connection, EHLO or AUTH.
        let outcome = send(&smtp, email(None, Some("Again"))).await;
        assert!(matches!(outcome, SendOutcome::Accepted { .. }), "{outcome:?}");
        let second = drain(&mut seen);
        assert!(!second.contains(&Seen::Connected), "{second:?}");
        assert_eq!(lines(&second)[0], "MAIL FROM:<noreply@shop.example>");
        let data = super::live::data(&second);
        assert!(data.contains("Content-Type: text/plain; charset=utf-8\r\n"), "{data}");
        assert!(!data.contains("multipart"), "{data}");
    }

    #[tokio::test]
    async fn a_session_closed_while_pooled_is_replaced_transparently() {
        let script = Script { after_data: AfterData::ReplyAndClose, ..Script::plain() };
        let (port, mut seen) = serve(script).await;
        let smtp = smtp(local_config(port, Security::Plain));
        for _ in 0..2 {
            let outcome = send(&smtp, email(None, Some("x"))).await;
            assert!(matches!(outcome, SendOutcome::Accepted { .. }), "{outcome:?}");
        }
        let all = drain(&mut seen);
        assert_eq!(all.iter().filter(|s| **s == Seen::Connected).count(), 2, "{all:?}");
        assert_eq!(all.iter().filter(|s| matches!(s, Seen::Data(_))).count(), 2);
    }

    #[tokio::test]
    async fn starttls_upgrades_before_auth_with_a_trusted_test_ca() {
        let (server, pem) = test_certificate();
        let script = Script { starttls: Some(server), ..Script::plain() };
        let (port, mut seen) = serve(script).await;
        let ca = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(ca.path(), pem).expect("write");
        let mut config = local_config(port, Security::Starttls);
        config.ca_file = Some(ca.path().to_owned());
        let outcome = send(&smtp(config), email(Some("<p>hi</p>"), Some("hi"))).await;
        assert!(matches!(outcome, SendOutcome::Accepted { .. }), "{outcome:?}");
        let all = drain(&mut seen);
        let tls_at = all.iter().position(|s| *s == Seen::Tls).expect("TLS came up");
        assert_eq!(
            all[..tls_at],
            [
                Seen::Connected,
                Seen::Line("EHLO courant.test".into()),
                Seen::Line("STARTTLS".into())
            ]
        );
        assert_eq!(
            lines(&all[tls_at..]),
            [
                "EHLO courant.test".to_owned(),
                auth_plain(),
                "MAIL FROM:<noreply@shop.example>".to_owned(),
                format!("RCPT TO:<{TO_EMAIL}>"),
                "DATA".to_owned(),
            ]
        );
        assert!(data(&all).contains("X-Courant-Notification-Id: n_01HZX3V4\r\n"));
    }

    #[tokio::test]
    async fn implicit_tls_works_with_a_trusted_test_ca() {
        let (server, pem) = test_certificate();
        let script = Script { implicit_tls: Some(server), ..Script::plain() };
        let (port, mut seen) = serve(script).await;
        let ca = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(ca.path(), pem).expect("write");
        let mut config = local_config(port, Security::Tls);
        config.ca_file = Some(ca.path().to_owned());
        let outcome = send(&smtp(config), email(None, Some("hi"))).await;
        assert!(matches!(outcome, SendOutcome::Accepted { .. }), "{outcome:?}");
        assert_eq!(lines(&drain(&mut seen))[0], "EHLO courant.test");
    }

    #[tokio::test]
    async fn an_untrusted_certificate_or_no_starttls_never_sends_credentials() {
        let (server, _pem) = test_certificate();
        let (port, mut seen) = serve(Script { starttls: Some(server), ..Script::plain() }).await;
        // Production roots only: the test certificate is not trusted.
        let e = failure(
            send(&smtp(local_config(port, Security::Starttls)), email(None, Some("x"))).await,
        );
        assert_eq!(e.class, ErrorClass::ProviderConfig, "{e}");
        assert!(!lines(&drain(&mut seen)).iter().any(|l| l.starts_with("AUTH")));

        let (port, mut seen) = serve(Script::plain()).await;
        let e = failure(
            send(&smtp(local_config(port, Security::Starttls)), email(None, Some("x"))).await,
        );
        assert_eq!(e.class, ErrorClass::ProviderConfig, "{e}");
        assert!(e.message.contains("STARTTLS"), "{}", e.message);
        assert_eq!(lines(&drain(&mut seen)), ["EHLO courant.test"]);
    }

    #[tokio::test]
    async fn scripted_error_replies_are_classified() {
        let retryable = ErrorClass::RETRYABLE;
        let config = ErrorClass::ProviderConfig;
        let permanent = ErrorClass::PermanentRecipient;
        let cases: &[(&str, &str, ErrorClass, &str)] = &[
            ("GREETING", "554 5.3.2 No SMTP service here", config, "connect"),
            ("AUTH", "535 5.7.8 Authentication credentials invalid", config, "connect"),
            ("AUTH", "454 4.7.0 Temporary authentication failure", retryable, "connect"),
            ("MAIL", "421 4.4.2 test.local closing connection", retryable, "MAIL FROM"),
            ("MAIL", "451 4.3.0 Local error in processing", retryable, "MAIL FROM"),
            ("MAIL", "530 5.7.0 Authentication required", config, "MAIL FROM"),
            ("MAIL", "550 5.7.1 Sender address rejected: not owned by user", config, "MAIL FROM"),
            ("MAIL", "552 5.3.4 Message size exceeds fixed limit", permanent, "MAIL FROM"),
            ("RCPT", "450 4.2.1 Mailbox busy", retryable, "RCPT TO"),
            ("RCPT", "452 4.2.2 Mailbox full", retryable, "RCPT TO"),
            (
                "RCPT",
                "550 5.1.1 <jane.doe@example.org>: Recipient address rejected: User unknown",
                permanent,
                "RCPT TO",
            ),
            ("RCPT", "551 5.1.6 User not local", permanent, "RCPT TO"),
            ("RCPT", "553 5.1.3 Mailbox name not allowed", permanent, "RCPT TO"),
            ("RCPT", "503 5.5.1 Bad sequence of commands", config, "RCPT TO"),
            ("DATA", "554 5.5.1 No valid recipients", permanent, "DATA"),
            ("END", "451 4.3.0 Queue file write error", retryable, "end of DATA"),
            ("END", "552 5.3.4 Message too big", permanent, "end of DATA"),
            ("END", "554 5.7.1 Message rejected as spam", permanent, "end of DATA"),
        ];
        for (step, reply, class, phase) in cases {
            let (port, _seen) = serve(Script::plain().reply(step, reply)).await;
            let e = failure(
                send(&smtp(local_config(port, Security::Plain)), email(None, Some("x"))).await,
            );
            assert_eq!(e.class, *class, "{step} {reply}: {e}");
            assert_eq!(e.code.as_deref(), Some(&reply[..3]), "{step} {reply}");
            assert!(e.message.starts_with(&format!("{phase}: ")), "{}", e.message);
            assert!(!e.message.contains("jane.doe"), "{}", e.message);
            assert!(!e.message.contains("s3cret"), "{}", e.message);
        }
    }

    #[tokio::test]
    async fn a_connection_lost_after_data_is_unknown() {
        let (port, mut seen) =
            serve(Script { after_data: AfterData::Drop, ..Script::plain() }).await;
        let e =
            failure(send(&smtp(local_config(port, Security::Plain)), email(None, Some("x"))).await);
        assert_eq!(e.class, ErrorClass::Unknown, "{e}");
        assert!(e.message.starts_with("end of DATA: "), "{}", e.message);
        // The relay did get the whole message.
        assert!(data(&drain(&mut seen)).contains("Message-ID: <n_01HZX3V4.2.acme@shop.example>"));

        let (port, _seen) = serve(Script { after_data: AfterData::Hang, ..Script::plain() }).await;
        let mut config = local_config(port, Security::Plain);
        config.timeout_ms = 500;
        config.connect_timeout_ms = 400;
        let e = failure(send(&smtp(config), email(None, Some("x"))).await);
        assert_eq!(e.class, ErrorClass::Unknown, "{e}");
    }

    #[tokio::test]
    async fn connect_failures_are_retryable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let e =
            failure(send(&smtp(local_config(port, Security::Plain)), email(None, Some("x"))).await);
        assert_eq!(e.class, ErrorClass::RETRYABLE, "{e}");
        assert!(e.message.contains("not sent"), "{}", e.message);

        // A server that accepts and never greets: the session deadline.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let mut config = local_config(port, Security::Plain);
        config.connect_timeout_ms = 300;
        let e = failure(send(&smtp(config), email(None, Some("x"))).await);
        assert_eq!(e.class, ErrorClass::RETRYABLE, "{e}");
    }

    #[test]
    fn provider_debug_hides_the_credentials() {
        let smtp = smtp(local_config(2525, Security::Plain));
        let debug = format!("{smtp:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert_eq!(smtp.channel(), steps::model::Channel::Email);
    }
}
