//! The `[providers.<name>]` section of an SMTP provider.
//!
//! ```toml
//! [providers.smtp]
//! kind = "smtp"                # read by the binary to pick this config type
//! host = "smtp.example.com"
//! port = 587                   # optional: 587 for starttls, 465 for tls, 25 for plain
//! security = "starttls"        # starttls | tls | plain (plain: localhost only)
//! username = "courant"         # optional, with password: AUTH PLAIN/LOGIN
//! password = "secret"
//! from = "notifications@example.com"
//! from_name = "Example"        # optional
//! hello_name = "mx.example.com"  # optional EHLO name; default: this host's name
//! ca_file = "/etc/courant/relay-ca.pem"  # optional extra trusted CA (PEM)
//! pool_max = 4                 # optional: idle connections kept
//! pool_idle_ms = 30000         # optional
//! timeout_ms = 10000           # optional
//! connect_timeout_ms = 3000    # optional
//! ```
//!
//! (`kind` belongs to the binary's enclosing enum, not to this struct.)

use std::path::PathBuf;

use serde::Deserialize;
use steps::model::{EmailAddress, ProviderName};

use crate::options;
use crate::{Error, Secret};

/// Longest sender display name, in characters.
pub const FROM_NAME_CHARS_MAX: usize = 100;

/// Default idle connections kept per provider.
pub const POOL_MAX_DEFAULT: usize = 4;

/// Most idle connections kept per provider: relays limit connections per client (Postfix's
/// `smtpd_client_connection_count_limit` is 50 by default, shared by everything we run).
pub const POOL_MAX_MAX: usize = 32;

/// Default time an idle connection is kept, in ms: well under the 300 s a relay waits for the
/// next command (RFC 5321 4.5.3.2.7, Postfix's `smtpd_timeout`), so we close first.
pub const POOL_IDLE_MS_DEFAULT: u64 = 30_000;

/// Longest idle time accepted, in ms.
pub const POOL_IDLE_MS_MAX: u64 = 240_000;

/// Longest host or EHLO name, in bytes (a DNS name).
const HOST_BYTES_MAX: usize = 253;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain connect, then `STARTTLS`, which is required: a relay that does not offer it is
    /// refused (a configuration error), never talked to in clear. Default port 587.
    Starttls,
    /// TLS from the first byte (RFC 8314 "implicit TLS"). Default port 465.
    Tls,
    /// No TLS at all. Only allowed for a relay on this host (`localhost`, `127.0.0.1`, `::1`),
    /// such as a local Postfix or the sandbox. Default port 25.
    Plain,
}

impl Security {
    /// The usual port of the mode.
    pub fn default_port(self) -> u16 {
        match self {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::Plain => 25,
        }
    }
}

/// An SMTP provider's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The relay's host name (checked against its certificate) or, for `plain`, a local address.
    pub host: String,
    /// The relay's port; default by `security` (587, 465, 25).
    #[serde(default)]
    pub port: Option<u16>,
    /// How the connection is secured: `starttls`, `tls` or `plain`.
    pub security: Security,
    /// The AUTH user name, with `password`; without both, no AUTH is attempted.
    #[serde(default)]
    pub username: Option<Secret>,
    /// The AUTH password. Printed as `***`. Must not contain whitespace.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The sender address (`From` and `MAIL FROM`); the relay must allow it for the user.
    pub from: EmailAddress,
    /// The sender's display name, at most 100 characters, one line.
    #[serde(default)]
    pub from_name: Option<String>,
    /// The name given in `EHLO`; default this host's name. Some relays check it.
    #[serde(default)]
    pub hello_name: Option<String>,
    /// A PEM file with extra CA certificates to trust for the relay (a private CA), on top of the
    /// built-in Mozilla roots. Read once at start-up.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Idle connections kept for reuse (1..=32; default 4).
    #[serde(default = "pool_max_default")]
    pub pool_max: usize,
    /// How long an idle connection is kept, in ms (1,000..=240,000; default 30,000).
    #[serde(default = "pool_idle_ms_default")]
    pub pool_idle_ms: u64,
    /// The deadline of one send, connect to the reply to the final `.`, in ms (100..=60,000;
    /// default 10,000). Hitting it after the message was written is an unknown outcome; before,
    /// it is retryable.
    #[serde(default = "options::timeout_ms_default")]
    pub timeout_ms: u64,
    /// The deadline for a ready session (connect, greeting, `EHLO`, TLS, `AUTH`), in ms (at most
    /// `timeout_ms`; default 3,000). Hitting it is retryable, since nothing was sent.
    #[serde(default = "options::connect_timeout_ms_default")]
    pub connect_timeout_ms: u64,
}

fn pool_max_default() -> usize {
    POOL_MAX_DEFAULT
}

fn pool_idle_ms_default() -> u64 {
    POOL_IDLE_MS_DEFAULT
}

/// Whether `host` names this machine.
pub(crate) fn is_local(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]")
}

fn is_host_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= HOST_BYTES_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

impl SmtpConfig {
    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.security.default_port())
    }

    /// Checks the values for provider `name`; called by the constructor, and usable at start-up
    /// without connecting.
    pub fn validate(&self, name: &ProviderName) -> Result<(), Error> {
        let provider = name.as_str();
        if !is_host_name(&self.host) {
            return Err(Error::config(provider, "host", "must be a host name or an IP address"));
        }
        if self.port == Some(0) {
            return Err(Error::config(provider, "port", "must be between 1 and 65535"));
        }
        if self.security == Security::Plain && !is_local(&self.host) {
            // Credentials and recipients' addresses in clear over a network: never.
            return Err(Error::config(
                provider,
                "security",
                "plain is only allowed for a relay on this host (localhost, 127.0.0.1, ::1)",
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(Error::config(provider, "password", "username and password go together"));
        }
        if let Some(from_name) = &self.from_name {
            options::one_line(provider, "from_name", from_name, FROM_NAME_CHARS_MAX)?;
        }
        if self.hello_name.as_deref().is_some_and(|hello| !is_host_name(hello)) {
            return Err(Error::config(provider, "hello_name", "must be a host name"));
        }
        if self.ca_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(Error::config(provider, "ca_file", "must be a path"));
        }
        if !(1..=POOL_MAX_MAX).contains(&self.pool_max) {
            return Err(Error::config(
                provider,
                "pool_max",
                format!("must be between 1 and {POOL_MAX_MAX}"),
            ));
        }
        if !(1_000..=POOL_IDLE_MS_MAX).contains(&self.pool_idle_ms) {
            return Err(Error::config(
                provider,
                "pool_idle_ms",
                format!("must be between 1000 and {POOL_IDLE_MS_MAX}"),
            ));
        }
        options::timeouts(provider, self.timeout_ms, self.connect_timeout_ms)
    }
}
