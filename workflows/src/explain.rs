//! `explain`: a plain-language answer to "why was it not sent / sent twice / sent by email
//! instead of SMS / late?", built only from what the lifecycle recorded.
//!
//! Every decision the lifecycle takes is a history entry whose state carries its data (the skip
//! reason, the deferral's end and where it resumes, the provider and attempt) and whose note
//! carries the inputs the step weighed (the preference rule and the directory revision it read,
//! the quiet-hours window, the rate counter, the retry policy and its delay, the breaker, the
//! provider's answer). [`explain`] walks that history once and turns it into [`Finding`]s, one per
//! decision that shaped the outcome, and an [`Explanation::answer`] that leads with the one that
//! matters most. It invents nothing: a finding's `data` is the note the step wrote.
//!
//! Pure: no I/O, no clock (durations are differences of recorded times).

use serde::Serialize;
use steps::limits::human_ms;
use steps::model::{Channel, NotificationId};

use crate::machine::{Resume, State, StateKind};
use crate::record::{Cause, HistoryEntry, Record};

/// What kind of decision a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Skipped without being sent (preferences, no address, a skip-on-limit policy, collapse).
    NotSent,
    /// Cancelled by a request.
    Cancelled,
    /// Held back by the recipient's quiet hours.
    QuietHours,
    /// Held back by a rate limit or a category cap.
    RateLimited,
    /// Held back by the provider's send rate (a reserved slot).
    Throttled,
    /// Waiting out a collapse window.
    CollapseWindow,
    /// Waiting before a retry after a failed attempt.
    RetryBackoff,
    /// Waiting for a receipt after an attempt whose outcome is unknown.
    Reconcile,
    /// Another wait (a circuit breaker, a re-check).
    Waited,
    /// A provider refused or failed an attempt.
    ProviderFailed,
    /// An attempt's outcome is unknown: the request may have gone out.
    Unknown,
    /// The next provider of the route took over (failover).
    Failover,
    /// The channel failed for good and another channel took over (fallback).
    Fallback,
    /// A send that may duplicate an earlier one (after an unknown outcome).
    PossibleDuplicate,
    /// A provider took the message.
    Sent,
    /// A receipt or the provider said it was delivered.
    Delivered,
    /// Failed for good on its last channel.
    Failed,
    /// Put in the dead-letter queue.
    DeadLettered,
    /// Replayed from the dead-letter queue by an operator.
    Replayed,
    /// An operator cut a wait short (`courant retry`).
    Retried,
}

impl FindingKind {
    /// The snake_case name (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::NotSent => "not_sent",
            FindingKind::Cancelled => "cancelled",
            FindingKind::QuietHours => "quiet_hours",
            FindingKind::RateLimited => "rate_limited",
            FindingKind::Throttled => "throttled",
            FindingKind::CollapseWindow => "collapse_window",
            FindingKind::RetryBackoff => "retry_backoff",
            FindingKind::Reconcile => "reconcile",
            FindingKind::Waited => "waited",
            FindingKind::ProviderFailed => "provider_failed",
            FindingKind::Unknown => "unknown",
            FindingKind::Failover => "failover",
            FindingKind::Fallback => "fallback",
            FindingKind::PossibleDuplicate => "possible_duplicate",
            FindingKind::Sent => "sent",
            FindingKind::Delivered => "delivered",
            FindingKind::Failed => "failed",
            FindingKind::DeadLettered => "dead_lettered",
            FindingKind::Replayed => "replayed",
            FindingKind::Retried => "retried",
        }
    }
}

/// One decision that shaped the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// When it was decided, ms since the Unix epoch.
    pub at_ms: u64,
    /// What kind of decision.
    pub kind: FindingKind,
    /// One sentence.
    pub summary: String,
    /// The inputs the step recorded (its history note), verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// For a wait, how long it was set to last, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// The answer for one notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The notification.
    pub id: NotificationId,
    /// Where it is now.
    pub state: StateKind,
    /// The channel it was asked for.
    pub requested_channel: Channel,
    /// A short paragraph answering why it is where it is, leading with what matters most.
    pub answer: String,
    /// From acceptance to the first hand-over to a provider, in ms, when it was handed over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handed_over_after_ms: Option<u64>,
    /// Every decision that shaped the outcome, oldest first.
    pub findings: Vec<Finding>,
}

/// Explains `record` from its `history` (oldest first, as stored).
pub fn explain(record: &Record, history: &[HistoryEntry]) -> Explanation {
    let accepted_at_ms = history.first().map_or(record.created_at_ms, |e| e.at_ms);
    let mut findings = Vec::new();
    let mut handed_over_at_ms = None;
    let mut previous: Option<&State> = None;
    for entry in history {
        if let Some(finding) = finding(entry, previous) {
            if matches!(finding.kind, FindingKind::Sent | FindingKind::Delivered) {
                handed_over_at_ms.get_or_insert(entry.at_ms);
            }
            findings.push(finding);
        }
        previous = Some(&entry.to);
    }
    let state = record.state.kind();
    let answer = answer(record, &findings);
    Explanation {
        id: record.id.clone(),
        state,
        requested_channel: record.request.channel,
        answer,
        handed_over_after_ms: handed_over_at_ms.map(|at| at.saturating_sub(accepted_at_ms)),
        findings,
    }
}

/// The finding of one history entry, if it is a decision worth naming (`previous` is the state
/// it left, when known: a failover and a fallback are told by it). Metrics count by the same
/// classification, so a dashboard and `explain` never disagree about what a decision was.
pub fn finding(entry: &HistoryEntry, previous: Option<&State>) -> Option<Finding> {
    let note = entry.note.clone();
    let make = |kind, summary: String, wait_ms: Option<u64>| Finding {
        at_ms: entry.at_ms,
        kind,
        summary,
        data: note.clone(),
        wait_ms,
    };
    let from = entry.from;
    let finding = match &entry.to {
        State::Skipped { reason } => make(FindingKind::NotSent, reason.to_string(), None),
        State::Cancelled {} => {
            make(FindingKind::Cancelled, format!("cancelled by {}", entry.cause), None)
        }
        // Not a decision of the lifecycle's own: an operator ended the wait it had decided on.
        State::Deferred { .. } if matches!(&entry.cause, Cause::Operator { action } if action == "retry") => {
            make(FindingKind::Retried, "an operator asked to retry now".to_owned(), None)
        }
        State::Deferred { until_ms, resume } => {
            let wait_ms = until_ms.saturating_sub(entry.at_ms);
            let (kind, summary) = deferral(entry, resume, wait_ms);
            make(kind, summary, Some(wait_ms))
        }
        State::Sending { channel, provider, attempt, possible_duplicate } => match previous {
            Some(State::Sending { provider: before, .. }) if before != provider => make(
                FindingKind::Failover,
                format!("failed over from {before} to {provider} on {channel}"),
                None,
            ),
            _ if *possible_duplicate => make(
                FindingKind::PossibleDuplicate,
                format!(
                    "attempt {attempt} on {provider} may duplicate an earlier attempt whose \
                         outcome was unknown"
                ),
                None,
            ),
            _ => return None,
        },
        State::Unknown { channel, provider, attempt } => make(
            FindingKind::Unknown,
            format!(
                "the outcome of attempt {attempt} on {provider} ({channel}) is unknown: the \
                 request may have reached the provider"
            ),
            None,
        ),
        State::Sent { channel, provider, attempt, .. } => make(
            FindingKind::Sent,
            format!("{provider} took it on {channel}, attempt {attempt}"),
            None,
        ),
        State::Delivered { channel, provider, attempt } => {
            let how = match &entry.cause {
                Cause::Receipt { .. } => "a delivery receipt from",
                _ => "delivered by",
            };
            make(
                FindingKind::Delivered,
                format!("{how} {provider} on {channel} (attempt {attempt})"),
                None,
            )
        }
        State::Failed { channel, provider, attempt, reason } => {
            let by = provider.as_ref().map_or(String::new(), |p| format!(" on {p}"));
            let kind = if from == Some(StateKind::Sending) {
                FindingKind::ProviderFailed
            } else {
                FindingKind::Failed
            };
            make(
                kind,
                format!("{channel} failed for good{by} after attempt {attempt}: {reason}"),
                None,
            )
        }
        State::DeadLettered { channel, reason, .. } => {
            make(FindingKind::DeadLettered, format!("dead-lettered on {channel}: {reason}"), None)
        }
        State::Filtered { channel } => match previous {
            Some(State::Failed { channel: failed, .. }) => {
                make(FindingKind::Fallback, format!("fell back from {failed} to {channel}"), None)
            }
            _ => return None,
        },
        State::Received {} if entry.is_replay() => make(
            FindingKind::Replayed,
            format!("replayed from the dead-letter queue by {}", entry.cause),
            None,
        ),
        _ => return None,
    };
    Some(finding)
}

/// What a deferral was for, from where it resumes and which step decided it.
fn deferral(entry: &HistoryEntry, resume: &Resume, wait_ms: u64) -> (FindingKind, String) {
    let wait = human_ms(wait_ms);
    let step = match &entry.cause {
        Cause::Step { step } => step.as_str(),
        _ => "",
    };
    match (resume, &entry.cause) {
        (Resume::Filter { channel }, _) => (
            FindingKind::QuietHours,
            format!("held {wait} for the recipient's quiet hours ({channel})"),
        ),
        (Resume::Send { .. }, Cause::Step { .. }) if step == "recheck" || step == "filter" => (
            FindingKind::QuietHours,
            format!("held {wait} for the recipient's quiet hours, found when the send was claimed"),
        ),
        (Resume::RateCheck { channel }, _) => (
            FindingKind::RateLimited,
            format!("held {wait} by the recipient's {channel} rate limit or a category cap"),
        ),
        (Resume::SendSlot { provider, .. }, _) => {
            (FindingKind::Throttled, format!("held {wait} for a slot in {provider}'s send rate"))
        }
        (Resume::Collapse { .. }, _) => {
            (FindingKind::CollapseWindow, format!("held {wait} to collect its collapse group"))
        }
        (Resume::Send { provider, attempt, .. }, Cause::Provider { .. }) => (
            FindingKind::RetryBackoff,
            format!("waited {wait} before retrying on {provider} (attempt {attempt})"),
        ),
        (Resume::Send { provider, attempt, .. }, _) if entry.from == Some(StateKind::Unknown) => (
            FindingKind::Reconcile,
            format!(
                "waited {wait} for a receipt before re-sending on {provider} (attempt {attempt})"
            ),
        ),
        (Resume::Send { provider, .. }, _) => {
            (FindingKind::Waited, format!("waited {wait} before sending on {provider}"))
        }
    }
}

/// The paragraph: the outcome first, then why, then what delayed it.
fn answer(record: &Record, findings: &[Finding]) -> String {
    let last = |kind: FindingKind| findings.iter().rev().find(|f| f.kind == kind);
    let with_data = |f: &Finding| match &f.data {
        Some(data) => format!("{} ({data})", f.summary),
        None => f.summary.clone(),
    };
    let requested = record.request.channel;
    let mut parts: Vec<String> = Vec::new();
    match record.state.kind() {
        StateKind::Skipped => {
            let why = last(FindingKind::NotSent).map_or_else(|| "skipped".into(), with_data);
            parts.push(format!("It was not sent: {why}."));
        }
        StateKind::Cancelled => {
            let why = last(FindingKind::Cancelled).map_or_else(|| "cancelled".into(), with_data);
            parts.push(format!("It was not sent: {why}."));
        }
        StateKind::DeadLettered => {
            let why = last(FindingKind::DeadLettered)
                .or_else(|| last(FindingKind::Failed))
                .map_or_else(|| "it failed for good".into(), |f| f.summary.clone());
            parts.push(format!("It was given up on and is in the dead-letter queue: {why}."));
            if let Some(data) = last(FindingKind::ProviderFailed).and_then(|f| f.data.as_ref()) {
                parts.push(format!("The last provider answer: {data}."));
            }
            let retries = findings.iter().filter(|f| f.kind == FindingKind::RetryBackoff).count();
            if retries > 0 {
                parts.push(format!("It was retried {retries} time(s) before that."));
            }
        }
        StateKind::Delivered | StateKind::Sent => {
            if let State::Delivered { channel, provider, attempt }
            | State::Sent { channel, provider, attempt, .. } = &record.state
            {
                let verb = if record.state.kind() == StateKind::Delivered {
                    "It was delivered"
                } else {
                    "It was sent (no delivery receipt yet)"
                };
                parts.push(format!("{verb} by {channel} through {provider}, attempt {attempt}."));
                if *channel != requested
                    && let Some(fallback) = last(FindingKind::Fallback)
                {
                    let failure =
                        findings.iter().rev().filter(|f| f.at_ms <= fallback.at_ms).find(|f| {
                            matches!(f.kind, FindingKind::ProviderFailed | FindingKind::Failed)
                        });
                    let why = failure.map_or_else(|| "it failed".into(), |f| f.summary.clone());
                    parts.push(format!(
                        "It went by {channel} instead of {requested} because {why}; {}.",
                        fallback.data.as_deref().unwrap_or("the fallback rule allowed it")
                    ));
                }
            }
        }
        other => {
            parts.push(format!("It has not finished: it is {other}."));
        }
    }
    if let Some(failover) = last(FindingKind::Failover) {
        parts.push(format!("Its provider changed: {}.", with_data(failover)));
    }
    let duplicates: Vec<&Finding> =
        findings.iter().filter(|f| f.kind == FindingKind::PossibleDuplicate).collect();
    if !duplicates.is_empty() {
        parts.push(format!(
            "It may have gone out more than once: {}.",
            duplicates.iter().map(|f| f.summary.as_str()).collect::<Vec<_>>().join("; ")
        ));
    }
    let waits: Vec<&Finding> = findings.iter().filter(|f| f.wait_ms.is_some()).collect();
    if !waits.is_empty() {
        let total: u64 = waits.iter().filter_map(|f| f.wait_ms).sum();
        let list: Vec<String> = waits.iter().map(|f| with_data(f)).collect();
        parts.push(format!("It waited {} in all: {}.", human_ms(total), list.join("; ")));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use steps::filter::SkipReason;
    use steps::model::{Attempt, Category, ProviderName, TenantId};

    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn record(channel: &str, state: State) -> Record {
        let request = serde_json::from_value(serde_json::json!({
            "recipient": {"id": "u1"},
            "channel": channel,
            "template": {"id": "receipt", "version": "1"},
            "data": {},
            "category": "marketing",
        }))
        .expect("request");
        Record {
            tenant: TenantId::new("acme").expect("id"),
            id: NotificationId::new("n01ABC").expect("id"),
            version: 9,
            state,
            request,
            seed: 7,
            created_at_ms: T0,
            updated_at_ms: T0,
            wake_at_ms: None,
            replay: None,
        }
    }

    fn step(name: &str) -> Cause {
        Cause::Step { step: name.into() }
    }

    fn provider(name: &str) -> Cause {
        Cause::Provider { provider: ProviderName::new(name).expect("name") }
    }

    fn entry(
        at: u64,
        from: Option<StateKind>,
        to: State,
        cause: Cause,
        note: &str,
    ) -> HistoryEntry {
        HistoryEntry {
            at_ms: T0 + at,
            version: 1,
            from,
            to,
            cause,
            note: (!note.is_empty()).then(|| note.to_owned()),
        }
    }

    fn received() -> HistoryEntry {
        let cause = Cause::Api { action: "submit".into() };
        entry(0, None, State::Received {}, cause, "")
    }

    fn sending(channel: Channel, name: &str, attempt: u32) -> State {
        State::Sending {
            channel,
            provider: ProviderName::new(name).expect("name"),
            attempt: Attempt(attempt),
            possible_duplicate: false,
        }
    }

    #[test]
    fn kind_names_are_their_serialised_names() {
        use FindingKind as K;
        let all = [
            K::NotSent,
            K::Cancelled,
            K::QuietHours,
            K::RateLimited,
            K::Throttled,
            K::CollapseWindow,
            K::RetryBackoff,
            K::Reconcile,
            K::Waited,
            K::ProviderFailed,
            K::Unknown,
            K::Failover,
            K::Fallback,
            K::PossibleDuplicate,
            K::Sent,
            K::Delivered,
            K::Failed,
            K::DeadLettered,
            K::Replayed,
            K::Retried,
        ];
        for kind in all {
            assert_eq!(serde_json::to_value(kind).expect("json"), kind.as_str());
        }
    }

    #[test]
    fn an_opt_out_names_the_rule_and_the_directory_revision() {
        let skipped = State::Skipped {
            reason: SkipReason::CategoryOptedOut {
                category: Category::new("marketing").expect("id"),
                channel: Channel::Email,
                everywhere: false,
            },
        };
        let note = "marketing off on email (the recipient's choice for marketing on email); \
                    directory revision 4";
        let history = [
            received(),
            entry(5, Some(StateKind::Received), skipped.clone(), step("filter"), note),
        ];
        let explanation = explain(&record("email", skipped), &history);
        assert_eq!(explanation.state, StateKind::Skipped);
        assert_eq!(
            explanation.answer,
            format!("It was not sent: recipient switched marketing off on email ({note}).")
        );
        assert_eq!(explanation.findings.len(), 1);
        assert_eq!(explanation.findings[0].kind, FindingKind::NotSent);
        assert_eq!(explanation.handed_over_after_ms, None);
    }

    #[test]
    fn quiet_hours_say_how_long_and_why_it_was_late() {
        let eight_hours = 8 * 3_600_000;
        let note = "quiet hours 22:00–07:00 in Europe/Paris (the recipient's); waits 28800000 ms";
        let deferred = State::Deferred {
            until_ms: T0 + 10 + eight_hours,
            resume: Resume::Filter { channel: Channel::Sms },
        };
        let sent = State::Sent {
            channel: Channel::Sms,
            provider: ProviderName::new("twilio").expect("name"),
            attempt: Attempt(1),
            provider_message_id: None,
        };
        let later = 10 + eight_hours;
        let history = [
            received(),
            entry(10, Some(StateKind::Received), deferred, step("filter"), note),
            entry(later, Some(StateKind::Deferred), State::Received {}, Cause::WakeUp, ""),
            entry(
                later,
                Some(StateKind::RateChecked),
                sending(Channel::Sms, "twilio", 1),
                step("route"),
                "",
            ),
            entry(
                later + 40,
                Some(StateKind::Sending),
                sent.clone(),
                provider("twilio"),
                "accepted",
            ),
        ];
        let explanation = explain(&record("sms", sent), &history);
        assert_eq!(explanation.handed_over_after_ms, Some(later + 40));
        let kinds: Vec<_> = explanation.findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [FindingKind::QuietHours, FindingKind::Sent]);
        assert!(
            explanation.answer.starts_with(
                "It was sent (no delivery receipt yet) by sms through twilio, attempt 1."
            ),
            "{}",
            explanation.answer
        );
        assert!(
            explanation.answer.contains(&format!(
                "It waited 8 h in all: held 8 h for the recipient's quiet hours (sms) ({note})."
            )),
            "{}",
            explanation.answer
        );
    }

    #[test]
    fn a_fallback_names_the_failure_and_the_rule() {
        let failure = "twilio attempt 1 failed: permanent_recipient (HTTP 400, code 21211)";
        let failed = State::Failed {
            channel: Channel::Sms,
            provider: Some(ProviderName::new("twilio").expect("name")),
            attempt: Attempt(1),
            reason: failure.into(),
        };
        let rule = "sms failed; falling back to email (sms→email rule for category marketing)";
        let delivered = State::Delivered {
            channel: Channel::Email,
            provider: ProviderName::new("sendgrid").expect("name"),
            attempt: Attempt(1),
        };
        let receipt = Cause::Receipt { provider: ProviderName::new("sendgrid").expect("name") };
        let history = [
            received(),
            entry(
                5,
                Some(StateKind::RateChecked),
                sending(Channel::Sms, "twilio", 1),
                step("route"),
                "",
            ),
            entry(9, Some(StateKind::Sending), failed, provider("twilio"), failure),
            entry(
                9,
                Some(StateKind::Failed),
                State::Filtered { channel: Channel::Email },
                step("fallback"),
                rule,
            ),
            entry(
                12,
                Some(StateKind::RateChecked),
                sending(Channel::Email, "sendgrid", 1),
                step("route"),
                "",
            ),
            entry(20, Some(StateKind::Sending), delivered.clone(), receipt, ""),
        ];
        let explanation = explain(&record("sms", delivered), &history);
        assert_eq!(
            explanation.answer,
            format!(
                "It was delivered by email through sendgrid, attempt 1. It went by email instead \
                 of sms because sms failed for good on twilio after attempt 1: {failure}; {rule}."
            )
        );
        let kinds: Vec<_> = explanation.findings.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [FindingKind::ProviderFailed, FindingKind::Fallback, FindingKind::Delivered]
        );
    }

    #[test]
    fn a_dead_letter_names_the_last_answer_and_the_retries() {
        let retry = |attempt: u32| State::Deferred {
            until_ms: T0 + 1_000 * u64::from(attempt),
            resume: Resume::Send {
                channel: Channel::Email,
                provider: ProviderName::new("sendgrid").expect("name"),
                attempt: Attempt(attempt),
                possible_duplicate: false,
            },
        };
        let last = "sendgrid attempt 3 failed: retryable (HTTP 503); all 3 attempts used";
        let failed = State::Failed {
            channel: Channel::Email,
            provider: Some(ProviderName::new("sendgrid").expect("name")),
            attempt: Attempt(3),
            reason: last.into(),
        };
        let dead = State::DeadLettered {
            channel: Channel::Email,
            provider: Some(ProviderName::new("sendgrid").expect("name")),
            attempt: Attempt(3),
            reason: last.into(),
        };
        let history = [
            received(),
            entry(
                1,
                Some(StateKind::RateChecked),
                sending(Channel::Email, "sendgrid", 1),
                step("route"),
                "",
            ),
            entry(
                2,
                Some(StateKind::Sending),
                retry(2),
                provider("sendgrid"),
                "HTTP 503; retry 1 of 2 in 998 ms",
            ),
            entry(
                1_000,
                Some(StateKind::Deferred),
                sending(Channel::Email, "sendgrid", 2),
                Cause::WakeUp,
                "",
            ),
            entry(
                1_001,
                Some(StateKind::Sending),
                retry(3),
                provider("sendgrid"),
                "HTTP 503; retry 2 of 2",
            ),
            entry(
                3_000,
                Some(StateKind::Deferred),
                sending(Channel::Email, "sendgrid", 3),
                Cause::WakeUp,
                "",
            ),
            entry(3_001, Some(StateKind::Sending), failed, provider("sendgrid"), last),
            entry(
                3_001,
                Some(StateKind::Failed),
                dead.clone(),
                step("fallback"),
                "no fallback from email",
            ),
        ];
        let explanation = explain(&record("email", dead), &history);
        assert!(
            explanation.answer.starts_with(&format!(
                "It was given up on and is in the dead-letter queue: dead-lettered on email: {last}. \
                 The last provider answer: {last}. It was retried 2 time(s) before that."
            )),
            "{}",
            explanation.answer
        );
        assert!(
            explanation.answer.contains("waited 1998 ms before retrying on sendgrid (attempt 2)")
        );
    }

    #[test]
    fn an_operators_retry_is_its_own_finding_not_another_wait() {
        let resume = Resume::Send {
            channel: Channel::Email,
            provider: ProviderName::new("sendgrid").expect("name"),
            attempt: Attempt(2),
            possible_duplicate: false,
        };
        let waiting = State::Deferred { until_ms: T0 + 600_000, resume: resume.clone() };
        let now = State::Deferred { until_ms: T0 + 5_000, resume };
        let retried = entry(
            5_000,
            Some(StateKind::Deferred),
            now,
            Cause::Operator { action: "retry".into() },
            "an operator asked to retry now: the send runs now instead of in 595000 ms",
        );
        let backoff = entry(1, Some(StateKind::Sending), waiting, provider("sendgrid"), "");
        let first = finding(&backoff, None).expect("a finding");
        assert_eq!(first.kind, FindingKind::RetryBackoff);
        let second = finding(&retried, None).expect("a finding");
        assert_eq!((second.kind, second.wait_ms), (FindingKind::Retried, None));
        assert!(second.data.unwrap().contains("595000 ms"));
    }
}
