//! The classification of SMTP replies and failures.
//!
//! SMTP answers each step of a transaction with a three-digit code (RFC 5321 4.2): `2xx` done,
//! `4xx` transient ("try again later"), `5xx` permanent. The same code means different things at
//! different steps (`550` to `MAIL FROM` refuses our sender, to `RCPT TO` the recipient), so the
//! class depends on the [`Phase`] too. A failure without a reply depends on the phase alone:
//! before the final `.` of `DATA` the relay cannot have taken the message (retryable); after it,
//! it may have (unknown).

use steps::outcome::ErrorClass;

/// The step of the transaction a reply or failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Connecting: TCP, TLS, greeting, `EHLO`, `STARTTLS`, `AUTH`.
    Connect,
    /// `MAIL FROM`.
    Mail,
    /// `RCPT TO`.
    Rcpt,
    /// The `DATA` command, before any content.
    Data,
    /// The content and its final `.`, until the reply.
    Message,
}

impl Phase {
    /// The phase's name in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Mail => "MAIL FROM",
            Phase::Rcpt => "RCPT TO",
            Phase::Data => "DATA",
            Phase::Message => "end of DATA",
        }
    }

    pub(crate) fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Connect,
            1 => Phase::Mail,
            2 => Phase::Rcpt,
            3 => Phase::Data,
            _ => Phase::Message,
        }
    }

    pub(crate) fn as_u8(self) -> u8 {
        self as u8
    }
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The relay replied with this code.
    Reply(u16),
    /// The connection failed, was closed or reset (no reply).
    Network,
    /// No reply within the deadline.
    Timeout,
    /// The TLS handshake failed (an untrusted or mismatched certificate, no common protocol).
    Tls,
    /// The relay does not speak what we need (no `STARTTLS`, no usable AUTH mechanism, no
    /// `SMTPUTF8` for an internationalized address) or its reply was malformed.
    Protocol,
}

/// The class of `failure` in `phase`.
///
/// - `4xx` (421 closing, 450/451/452 mailbox busy, local error, storage): retryable, whatever
///   the phase.
/// - `530`/`534`/`535`/`538` (authentication required, too weak, refused): configuration.
/// - Any other `5xx` while connecting (the greeting, `EHLO`, `STARTTLS`, `AUTH`): configuration.
/// - `550`/`553` to `MAIL FROM`: the relay refuses our sender: configuration.
/// - `550`/`551`/`553` (mailbox unavailable, not local, name not allowed) and `552`/`554`
///   (message too large, transaction failed: content refused) otherwise: permanent for this
///   message or recipient.
/// - Other `5xx` (`500`-`504` syntax and sequence errors, `555` unknown parameters): our client
///   and the relay disagree: configuration.
/// - No reply (network, timeout) before the content was sent: retryable; after: unknown.
/// - TLS failures: configuration (a certificate we do not trust will not fix itself).
/// - Protocol mismatches: configuration, except after the content was sent (unknown).
pub(crate) fn classify(phase: Phase, failure: Failure) -> ErrorClass {
    match failure {
        Failure::Reply(code) => match code {
            400..=499 => ErrorClass::RETRYABLE,
            530 | 534 | 535 | 538 => ErrorClass::ProviderConfig,
            _ if phase == Phase::Connect => ErrorClass::ProviderConfig,
            550 | 553 if phase == Phase::Mail => ErrorClass::ProviderConfig,
            550..=554 => ErrorClass::PermanentRecipient,
            _ => ErrorClass::ProviderConfig,
        },
        Failure::Network | Failure::Timeout if phase == Phase::Message => ErrorClass::Unknown,
        Failure::Network | Failure::Timeout => ErrorClass::RETRYABLE,
        Failure::Tls => ErrorClass::ProviderConfig,
        Failure::Protocol if phase == Phase::Message => ErrorClass::Unknown,
        Failure::Protocol => ErrorClass::ProviderConfig,
    }
}
