//! A harness for end-to-end tests: a throwaway Redis, the provider sandbox and courant servers as
//! real child processes of the real binary, and the real CLI.

#![allow(dead_code)]

pub mod openapi;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use storage::testing::RedisServer;

/// The courant binary built for this test run.
pub fn courant() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_courant"));
    command.env_remove("COURANT_API_KEY").env_remove("COURANT_SERVER").env_remove("COURANT_CONFIG");
    command.env("COURANT_LOG", "warn,courant=info");
    // A developer's collector is not the tests' (tests/otel_e2e.rs sets its own).
    for otel in
        ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"]
    {
        command.env_remove(otel);
    }
    command
}

/// A free TCP port on loopback (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// Waits until `url` answers 200, or panics after `timeout`.
pub fn wait_http_ok(url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(200) = http::get_status(url) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{url} did not answer 200 within {timeout:?}");
}

/// Minimal blocking HTTP for the harness (the tests are synchronous).
pub mod http {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn split(url: &str) -> (String, String) {
        let rest = url.strip_prefix("http://").expect("http URL");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        (host.to_owned(), format!("/{path}"))
    }

    /// One HTTP/1.1 request; returns the status code and the body.
    pub fn request(method: &str, url: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
        request_with_key(method, url, None, body)
    }

    /// One HTTP/1.1 request with `Authorization: Bearer <key>` when a key is given.
    pub fn request_with_key(
        method: &str,
        url: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|auth| ("Authorization", auth.as_str())).collect();
        request_with_headers(method, url, &headers, body)
    }

    /// One HTTP/1.1 request with these headers (besides `Host`, `Content-Type: application/json`
    /// and `Content-Length`).
    pub fn request_with_headers(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let (host, path) = split(url);
        let mut stream = TcpStream::connect(&host)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        let body = body.unwrap_or("");
        let headers: String =
            headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((status, body))
    }

    /// GET, returning the status.
    pub fn get_status(url: &str) -> std::io::Result<u16> {
        request("GET", url, None).map(|(status, _)| status)
    }
}

/// A child process killed on drop.
pub struct Process {
    /// The child.
    pub child: Child,
    /// What it is, for messages.
    pub name: String,
}

impl Process {
    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit, returning whether it exited successfully.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not stop within {timeout:?} of SIGTERM", self.name);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A retry policy for `channel` that gives up quickly: `attempts_max` attempts, 100 ms then
/// 200 ms apart, no jitter, within a minute. For [`Stack::start`]'s extra configuration.
pub fn quick_retries(channel: &str, attempts_max: u32) -> String {
    format!(
        "\n[policy.retry.{channel}]\nattempts_max = {attempts_max}\ndelay_ms_base = 100\n\
         factor = 2.0\ndelay_ms_max = 200\njitter = false\nttl_ms = 60000\n"
    )
}

/// Redis + sandbox + configuration + API key: everything a courant server needs.
pub struct Stack {
    /// The throwaway Redis.
    pub redis: RedisServer,
    /// The sandbox process.
    pub sandbox: Process,
    /// The sandbox's base URL.
    pub sandbox_url: String,
    /// A temp dir for the config file and logs.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The API's base URL.
    pub api_url: String,
    /// An API key for tenant `acme`.
    pub key: String,
}

impl Stack {
    /// Starts Redis and the sandbox, writes a config (`extra` is appended to it, with
    /// `{sandbox_url}` or `{SANDBOX}` replaced by the sandbox's base URL) and creates a key.
    pub fn start(extra: &str) -> Stack {
        let redis = RedisServer::start();
        let sandbox_port = free_port();
        let sandbox_url = format!("http://127.0.0.1:{sandbox_port}");
        let sandbox = Process {
            child: courant()
                .args(["sandbox", "--listen", &format!("127.0.0.1:{sandbox_port}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn the sandbox"),
            name: "sandbox".into(),
        };
        wait_http_ok(&format!("{sandbox_url}/sandbox/stats"), Duration::from_secs(10));
        let extra = extra.replace("{sandbox_url}", &sandbox_url);
        let dir = tempfile::tempdir().expect("temp dir");
        let api_port = free_port();
        let templates = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");
        let config = dir.path().join("courant.toml");
        let text = format!(
            r#"templates_dir = "{templates}"

[api]
listen = "127.0.0.1:{api_port}"

[redis]
url = "{redis}"

[providers.sendgrid]
kind = "sendgrid"
base_url = "{sandbox_url}"
api_key = "sandbox-sendgrid-key"
from = "courant@test.example"
timeout_ms = 5000

[providers.twilio]
kind = "twilio"
base_url = "{sandbox_url}"
account_sid = "AC00000000000000000000000000000000"
auth_token = "sandbox-twilio-token"
from = "+15005550006"
status_callback_base_url = "http://127.0.0.1:{api_port}"
timeout_ms = 5000

[providers.inapp]
kind = "in_app"

{extra}
"#,
            redis = redis.url(),
            extra = extra.replace("{SANDBOX}", &sandbox_url),
        );
        std::fs::File::create(&config)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("write config");
        let output = courant()
            .args(["keys", "create", "--tenant", "acme", "--redis", &redis.url()])
            .output()
            .expect("run keys create");
        assert!(output.status.success(), "keys create failed: {}", stderr(&output));
        let key = String::from_utf8(output.stdout).expect("utf8").trim().to_owned();
        assert!(key.starts_with("ck_"), "unexpected key output {key:?}");
        Stack {
            redis,
            sandbox,
            sandbox_url,
            dir,
            config,
            api_url: format!("http://127.0.0.1:{api_port}"),
            key,
        }
    }

    /// Starts `courant serve --role ROLE` with this stack's config; waits for the API when the
    /// role serves it.
    pub fn serve(&self, role: &str, host: &str) -> Process {
        let log = std::fs::File::create(
            self.dir.path().join(format!("serve-{role}-{}.log", free_port())),
        )
        .expect("log file");
        let child = courant()
            .args(["serve", "--role", role, "--config"])
            .arg(&self.config)
            .env("HOSTNAME", host)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn serve");
        if role != "worker" {
            wait_http_ok(&format!("{}/healthz", self.api_url), Duration::from_secs(15));
        }
        Process { child, name: format!("serve --role {role}") }
    }

    /// Runs the CLI against this stack's API.
    pub fn cli(&self, args: &[&str]) -> Output {
        courant()
            .args(args)
            .env("COURANT_SERVER", &self.api_url)
            .env("COURANT_API_KEY", &self.key)
            .output()
            .expect("run the CLI")
    }

    /// Runs the CLI as a person at a terminal would: under a pseudo-terminal (util-linux
    /// `script`), typing `input`. Returns what the terminal showed (stdout and stderr together)
    /// and whether the CLI succeeded.
    pub fn cli_tty(&self, args: &[&str], input: &str) -> (bool, String) {
        let mut line = shell_quote(env!("CARGO_BIN_EXE_courant"));
        for arg in args {
            line.push(' ');
            line.push_str(&shell_quote(arg));
        }
        let mut child = Command::new("script")
            .args(["--quiet", "--return", "--command", &line, "/dev/null"])
            .env("COURANT_SERVER", &self.api_url)
            .env("COURANT_API_KEY", &self.key)
            .env("COURANT_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the CLI under script(1)");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("type the input");
        let output = child.wait_with_output().expect("wait for script(1)");
        let shown = String::from_utf8_lossy(&output.stdout).replace("\r\n", "\n");
        (output.status.success(), shown)
    }

    /// Runs the CLI with `--json` and parses stdout, asserting success.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.cli(&all);
        assert!(output.status.success(), "courant {args:?} failed: {}", stderr(&output));
        serde_json::from_slice(&output.stdout).expect("the CLI printed JSON")
    }

    /// Submits one notification to recipient `ada` with the CLI and returns its id.
    pub fn send(&self, channel: &str, template: &str, data: &str) -> String {
        self.send_to("ada", channel, template, data)
    }

    /// Submits one notification to `recipient` (with an email address and a phone number) with
    /// the CLI and returns its id.
    pub fn send_to(&self, recipient: &str, channel: &str, template: &str, data: &str) -> String {
        self.send_with(
            &["--recipient", recipient, "--email", "ada@example.com", "--phone", "+14155550123"],
            channel,
            template,
            data,
        )
    }

    /// Submits one notification with the given recipient arguments and returns its id.
    pub fn send_with(
        &self,
        recipient: &[&str],
        channel: &str,
        template: &str,
        data: &str,
    ) -> String {
        let mut args = vec!["send"];
        args.extend_from_slice(recipient);
        args.extend_from_slice(&["--channel", channel, "--template", template, "--data", data]);
        let output = self.cli(&args);
        assert!(output.status.success(), "send failed: {}", stderr(&output));
        String::from_utf8(output.stdout).expect("utf8").trim().to_owned()
    }

    /// Polls a notification until `done(state)` holds, returning its JSON view.
    pub fn wait_state(&self, id: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let view = self.cli_json(&["status", id]);
            let state = view["state"].as_str().unwrap_or_default().to_owned();
            if done(&state) {
                return view;
            }
            if Instant::now() >= deadline {
                let history = self.cli(&["history", id]);
                panic!(
                    "{id} still {state} after {timeout:?}:\n{}",
                    String::from_utf8_lossy(&history.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One authorised request to the API with a JSON body; returns the status and the JSON
    /// answer (`null` when the answer is not JSON).
    pub fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.api_url);
        let (status, text) = http::request_with_key(method, &url, Some(&self.key), Some(body))
            .expect("the API answers");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sets a sandbox provider's behaviour (JSON as in the sandbox config).
    pub fn sandbox_behaviour(&self, provider: &str, behaviour: &str) {
        let url = format!("{}/sandbox/behaviour/{provider}", self.sandbox_url);
        let (status, body) = http::request("PUT", &url, Some(behaviour)).expect("sandbox");
        assert!(
            (200..300).contains(&status),
            "setting the sandbox behaviour failed: {status} {body}"
        );
    }

    /// The messages a sandbox provider (`sendgrid`, `twilio`) took, oldest first: each carries
    /// courant's notification id (SendGrid `custom_args`, Twilio's status-callback URL).
    pub fn sandbox_messages(&self, provider: &str) -> Vec<Value> {
        let url = format!("{}/sandbox/messages?provider={provider}", self.sandbox_url);
        let (status, body) = http::request("GET", &url, None).expect("sandbox");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("messages JSON")
    }

    /// The sandbox's counters.
    pub fn sandbox_stats(&self) -> Value {
        let url = format!("{}/sandbox/stats", self.sandbox_url);
        let (_, body) = http::request("GET", &url, None).expect("sandbox");
        serde_json::from_str(&body).expect("stats JSON")
    }
}

/// A process output's stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `s` quoted for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
