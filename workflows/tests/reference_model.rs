//! The single-notification lifecycle against an independent reference model
//! (`proptest-state-machine`, research/perf-and-simulation-anchors.md §B2).
//!
//! [`Phase`] is a plain enum with a plain transition function ([`Model::react`]), written from the
//! lifecycle's contract (DESIGN.md §1 and the docs of `workflows::machine`), not from statig. The
//! only production code it calls is the retry policy (`RetryPolicy::after_failure`, through
//! `Policy::retry`) and the provider route (`Policy::route`): they are policy, not the machine.
//!
//! proptest generates a starting state (mostly `received`, sometimes any reachable state) and up
//! to 40 transitions whose payloads are realistic for the current model state: filter allow/skip,
//! render ok/err, rate allow/defer/skip, every send outcome (every `ErrorClass`, Retry-After
//! none/0/short/long), receipts, cancels, wake-ups at virtual times before, at and after a
//! deferred `until_ms`, proceeds, restarts (persist to JSON and restore, as the runner does on
//! every wake-up), and operator replays out of the dead-letter queue (which restart the time
//! budget and may flag every later send as a possible duplicate, as the runner's replay does). The system under test is the real machine restored through
//! `workflows::machine::restore` and driven with `handle_with_context`, one fresh [`Context`] per
//! event, time never going backwards.
//!
//! After every transition: the full `State` equals the model's (mapped by [`Phase::to_state`],
//! failure reasons included), the effects equal the model's, and a terminal state has not moved.
//! Invariants that do not depend on the model are checked too: an attempt is sent at most once
//! and never beyond `attempts_max`, every send after an unknown outcome is flagged as a possible
//! duplicate, a retry never runs before the provider's Retry-After nor after the time budget.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::FileFailurePersistence;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use steps::fallback::FallbackDecision;
use steps::filter::{FilterDecision, SkipReason};
use steps::limits::Limit;
use steps::model::{Attempt, Category, Channel, ProviderName, TemplateId};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use steps::rate::RateDecision;
use steps::render::RenderError;
use steps::retry::{RetryDecision, RetryPolicy};
use workflows::machine::{self, Context, Effect, Event, Machine, Receipt, Resume, State};
use workflows::policy::Policy;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// When the first notification of a case was accepted; the retry time budget counts from here.
const ACCEPTED_MS: u64 = 1_700_000_000_000;

/// The most transitions in one case.
const TRANSITIONS_MAX: usize = 40;

fn provider(name: &str) -> ProviderName {
    ProviderName::new(name).unwrap()
}

/// The policies a case runs under, picked by index.
///
/// 0. The shipped defaults with routes for SMS, email (two providers), push and in-app; chat has
///    no route (the "no provider" failure) and uses `Policy::RETRY_DEFAULT`.
/// 1. Tight policies that make the edges show up within a few transitions: SMS retries without
///    jitter inside a 20 s budget on the first of two providers, in-app never retries, push
///    retries a lot with jitter inside 2 minutes, chat retries once, email has no route.
static POLICIES: LazyLock<[Policy; 2]> = LazyLock::new(|| {
    let mut defaults = Policy::default();
    defaults.routes.insert(Channel::Sms, vec![provider("twilio")]);
    defaults.routes.insert(Channel::Email, vec![provider("sendgrid"), provider("ses")]);
    defaults.routes.insert(Channel::Push, vec![provider("fcm")]);
    defaults.routes.insert(Channel::InApp, vec![provider("inapp")]);

    let mut tight = Policy::default();
    let retry = |attempts_max, delay_ms_base, factor, delay_ms_max, jitter, ttl_ms| RetryPolicy {
        attempts_max,
        delay_ms_base,
        factor,
        delay_ms_max,
        jitter,
        ttl_ms,
        schedule_ms: Vec::new(),
    };
    tight.retry.insert(Channel::Sms, retry(3, 1_000, 2.0, 4_000, false, 20_000));
    tight.retry.insert(Channel::InApp, retry(1, 1_000, 1.0, 1_000, false, 60_000));
    tight.retry.insert(Channel::Push, retry(6, 500, 3.0, 60_000, true, 120_000));
    tight.retry.insert(Channel::Chat, retry(2, 10_000, 1.5, 10_000, true, 3_600_000));
    tight.routes.insert(Channel::Sms, vec![provider("vonage"), provider("twilio")]);
    tight.routes.insert(Channel::Push, vec![provider("apns")]);
    tight.routes.insert(Channel::InApp, vec![provider("inapp")]);
    tight.routes.insert(Channel::Chat, vec![provider("slack")]);

    for policy in [&defaults, &tight] {
        policy.validate().unwrap();
    }
    [defaults, tight]
});

// ---------------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------------

/// Where a deferred notification goes when its wake-up is due.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Then {
    /// Back to the filter (quiet hours ended).
    Filter(Channel),
    /// Back to the rate check.
    RateCheck(Channel),
    /// Send attempt `attempt` again on `provider`.
    Send { channel: Channel, provider: ProviderName, attempt: u32, possible_duplicate: bool },
}

/// The lifecycle states, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Received,
    Filtered(Channel),
    Rendered(Channel),
    RateChecked(Channel),
    Sending { channel: Channel, provider: ProviderName, attempt: u32, possible_duplicate: bool },
    Unknown { channel: Channel, provider: ProviderName, attempt: u32 },
    Deferred { until_ms: u64, then: Then },
    Sent { channel: Channel, provider: ProviderName, attempt: u32, message_id: Option<String> },
    Failed { channel: Channel, provider: Option<ProviderName>, attempt: u32, reason: String },
    Delivered { channel: Channel, provider: ProviderName, attempt: u32 },
    DeadLettered { channel: Channel, provider: Option<ProviderName>, attempt: u32, reason: String },
    Skipped(SkipReason),
    Cancelled,
}

impl Phase {
    /// Nothing moves a terminal phase.
    fn is_terminal(&self) -> bool {
        matches!(
            self,
            Phase::Delivered { .. }
                | Phase::DeadLettered { .. }
                | Phase::Skipped(_)
                | Phase::Cancelled
        )
    }

    /// Phases a cancel request may end: nothing has been handed to a provider yet, or the next
    /// attempt is only scheduled. `sending` and `unknown` may have a request on the wire, and
    /// `sent` and `failed` are past the point of cancelling.
    fn is_cancellable(&self) -> bool {
        matches!(
            self,
            Phase::Received
                | Phase::Filtered(_)
                | Phase::Rendered(_)
                | Phase::RateChecked(_)
                | Phase::Deferred { .. }
        )
    }

    /// What entering the phase asks the shell to do.
    fn on_entry(&self) -> Vec<Effect> {
        match self {
            Phase::Filtered(channel) => vec![Effect::Render { channel: *channel }],
            Phase::Rendered(channel) => vec![Effect::AcquireRate { channel: *channel }],
            // Transient phases move on at once.
            Phase::Failed { channel, .. } => vec![Effect::Fallback { from: *channel }],
            Phase::RateChecked(_) | Phase::Unknown { .. } => {
                vec![Effect::Proceed]
            }
            Phase::Sending { channel, provider, attempt, possible_duplicate } => {
                vec![Effect::Send {
                    channel: *channel,
                    provider: provider.clone(),
                    attempt: Attempt(*attempt),
                    possible_duplicate: *possible_duplicate,
                }]
            }
            Phase::Deferred { until_ms, .. } => vec![Effect::Wake { at_ms: *until_ms }],
            Phase::Received
            | Phase::Sent { .. }
            | Phase::Delivered { .. }
            | Phase::DeadLettered { .. }
            | Phase::Skipped(_)
            | Phase::Cancelled => vec![],
        }
    }

    /// The machine's `State` for this phase: the comparison is on the full state.
    fn to_state(&self) -> State {
        match self.clone() {
            Phase::Received => State::Received {},
            Phase::Filtered(channel) => State::Filtered { channel },
            Phase::Rendered(channel) => State::Rendered { channel },
            Phase::RateChecked(channel) => State::RateChecked { channel },
            Phase::Sending { channel, provider, attempt, possible_duplicate } => {
                State::Sending { channel, provider, attempt: Attempt(attempt), possible_duplicate }
            }
            Phase::Unknown { channel, provider, attempt } => {
                State::Unknown { channel, provider, attempt: Attempt(attempt) }
            }
            Phase::Deferred { until_ms, then } => State::Deferred {
                until_ms,
                resume: match then {
                    Then::Filter(channel) => Resume::Filter { channel },
                    Then::RateCheck(channel) => Resume::RateCheck { channel },
                    Then::Send { channel, provider, attempt, possible_duplicate } => Resume::Send {
                        channel,
                        provider,
                        attempt: Attempt(attempt),
                        possible_duplicate,
                    },
                },
            },
            Phase::Sent { channel, provider, attempt, message_id } => State::Sent {
                channel,
                provider,
                attempt: Attempt(attempt),
                provider_message_id: message_id,
            },
            Phase::Failed { channel, provider, attempt, reason } => {
                State::Failed { channel, provider, attempt: Attempt(attempt), reason }
            }
            Phase::Delivered { channel, provider, attempt } => {
                State::Delivered { channel, provider, attempt: Attempt(attempt) }
            }
            Phase::DeadLettered { channel, provider, attempt, reason } => {
                State::DeadLettered { channel, provider, attempt: Attempt(attempt), reason }
            }
            Phase::Skipped(reason) => State::Skipped { reason },
            Phase::Cancelled => State::Cancelled {},
        }
    }
}

/// What one event does to a phase.
enum Reaction {
    /// The phase stays; these effects are asked for (a re-driven step, a re-armed wake-up).
    Stay(Vec<Effect>),
    /// The phase changes; the new phase's entry effects follow.
    Go(Phase),
    /// The phase changes, with these effects (the end of quiet hours asks for the filter, which
    /// `received` has no entry action for).
    GoWith(Phase, Vec<Effect>),
}

/// The reference state: the lifecycle phase plus what the machine's context is built from.
#[derive(Debug, Clone)]
struct Model {
    /// Where the notification is.
    phase: Phase,
    /// Index into [`POLICIES`].
    policy: usize,
    /// The channel the notification was submitted for (the context's channel).
    channel: Channel,
    /// The notification's seed (retry jitter).
    seed: u64,
    /// When the retry time budget started: acceptance, or the latest replay.
    accepted_ms: u64,
    /// Whether a replay was forced past an unknown outcome: every send is a possible duplicate.
    possible_duplicate: bool,
    /// The virtual time of the last transition; never goes back.
    now_ms: u64,
    /// The effects the last transition asked for.
    effects: Vec<Effect>,
}

impl Model {
    fn policy(&self) -> &'static Policy {
        &POLICIES[self.policy]
    }

    /// The provider after `provider` in the channel's route, if any (failover).
    fn next_provider(&self, channel: Channel, provider: &ProviderName) -> Option<ProviderName> {
        let route = self.policy().route(channel);
        route.iter().position(|p| p == provider).and_then(|i| route.get(i + 1)).cloned()
    }

    /// The lifecycle's transition function.
    fn react(&self, event: &Event) -> Reaction {
        use Reaction::{Go, Stay};

        // The two ways out of the dead-letter queue: an operator's replay, and a late delivery
        // receipt from the provider it was last with (the runner passes no other).
        match (&self.phase, event) {
            (Phase::DeadLettered { .. }, Event::Replay) => return Go(Phase::Received),
            (
                Phase::DeadLettered { channel, provider: Some(provider), attempt, .. },
                Event::Receipt(Receipt::Delivered),
            ) => {
                return Go(Phase::Delivered {
                    channel: *channel,
                    provider: provider.clone(),
                    attempt: *attempt,
                });
            }
            _ => {}
        }
        if self.phase.is_terminal() {
            return Stay(vec![]);
        }
        if let Event::Cancel = event {
            return if self.phase.is_cancellable() { Go(Phase::Cancelled) } else { Stay(vec![]) };
        }
        match (&self.phase, event) {
            // received: ask for the preference filter until it answers.
            (Phase::Received, Event::Wake) => Stay(vec![Effect::Filter { channel: self.channel }]),
            (Phase::Received, Event::Filtered(FilterDecision::Allow { channel, .. })) => {
                Go(Phase::Filtered(*channel))
            }
            (Phase::Received, Event::Filtered(FilterDecision::Skip(reason))) => {
                Go(Phase::Skipped(reason.clone()))
            }
            // Quiet hours: wait for their end, unless that is past the time budget.
            (Phase::Received, Event::Filtered(FilterDecision::Defer { channel, until_ms, .. })) => {
                Go(self.quiet_hours(*channel, *until_ms, Then::Filter(*channel)))
            }

            // filtered: render.
            (Phase::Filtered(channel), Event::Wake) => {
                Stay(vec![Effect::Render { channel: *channel }])
            }
            (Phase::Filtered(channel), Event::Rendered(Ok(()))) => Go(Phase::Rendered(*channel)),
            (Phase::Filtered(channel), Event::Rendered(Err(error))) => Go(Phase::Failed {
                channel: *channel,
                provider: None,
                attempt: 0,
                reason: format!("render failed: {error}"),
            }),

            // rendered: take a rate slot.
            (Phase::Rendered(channel), Event::Wake) => {
                Stay(vec![Effect::AcquireRate { channel: *channel }])
            }
            (Phase::Rendered(channel), Event::RateChecked(decision)) => match decision {
                RateDecision::Allow => Go(Phase::RateChecked(*channel)),
                RateDecision::Defer { until_ms, .. }
                    if *until_ms > self.accepted_ms + self.policy().retry(*channel).ttl_ms =>
                {
                    Go(Phase::Skipped(SkipReason::Expired { channel: *channel }))
                }
                RateDecision::Defer { until_ms, .. } => {
                    Go(Phase::Deferred { until_ms: *until_ms, then: Then::RateCheck(*channel) })
                }
                // The reason names the window that was full: a channel's, or a category cap.
                RateDecision::Skip { limit: Limit::Channel { channel, .. } } => {
                    Go(Phase::Skipped(SkipReason::RateLimited { channel: *channel }))
                }
                RateDecision::Skip { limit: Limit::Cap { category, max, window_ms } } => {
                    Go(Phase::Skipped(SkipReason::Capped {
                        category: category.clone(),
                        max: *max,
                        window_ms: *window_ms,
                    }))
                }
            },

            // rate_checked: the first provider of the route gets attempt 1.
            (Phase::RateChecked(channel), Event::Wake | Event::Proceed) => {
                match self.policy().route(*channel).first() {
                    Some(provider) => Go(Phase::Sending {
                        channel: *channel,
                        provider: provider.clone(),
                        attempt: 1,
                        possible_duplicate: self.possible_duplicate,
                    }),
                    None => Go(Phase::Failed {
                        channel: *channel,
                        provider: None,
                        attempt: 0,
                        reason: format!("no provider is configured for {channel}"),
                    }),
                }
            }

            // sending: the provider's answer, a receipt, or a lapsed lease.
            (
                Phase::Sending { channel, provider, attempt, possible_duplicate },
                Event::SendResult(outcome),
            ) => match outcome {
                SendOutcome::Accepted { delivered: true, .. } => Go(Phase::Delivered {
                    channel: *channel,
                    provider: provider.clone(),
                    attempt: *attempt,
                }),
                SendOutcome::Accepted { provider_message_id, delivered: false } => {
                    Go(Phase::Sent {
                        channel: *channel,
                        provider: provider.clone(),
                        attempt: *attempt,
                        message_id: provider_message_id.clone(),
                    })
                }
                SendOutcome::Failed(error) => {
                    let why = format!("{provider} attempt {attempt} failed: {error}");
                    match error.class {
                        ErrorClass::Retryable { retry_after_ms }
                        | ErrorClass::RateLimited { retry_after_ms } => Go(self.retry_or_fail(
                            *channel,
                            provider,
                            *attempt,
                            retry_after_ms,
                            *possible_duplicate,
                            why,
                        )),
                        ErrorClass::Unknown => Go(Phase::Unknown {
                            channel: *channel,
                            provider: provider.clone(),
                            attempt: *attempt,
                        }),
                        ErrorClass::CircuitOpen { retry_after_ms } => {
                            // Nothing was sent: the next provider, same attempt; or wait for the
                            // breaker, unless that runs past the time budget.
                            if let Some(next) = self.next_provider(*channel, provider) {
                                Go(Phase::Sending {
                                    channel: *channel,
                                    provider: next,
                                    attempt: *attempt,
                                    possible_duplicate: *possible_duplicate,
                                })
                            } else {
                                let until_ms = self.now_ms + retry_after_ms.unwrap_or(1_000).max(1);
                                let policy = self.policy();
                                if until_ms > self.accepted_ms + policy.retry(*channel).ttl_ms {
                                    Go(Phase::Failed {
                                        channel: *channel,
                                        provider: Some(provider.clone()),
                                        attempt: *attempt,
                                        reason: format!(
                                            "the circuit breakers of the {channel} route stay \
                                             open past the time budget"
                                        ),
                                    })
                                } else {
                                    let first = policy
                                        .route(*channel)
                                        .first()
                                        .cloned()
                                        .unwrap_or_else(|| provider.clone());
                                    Go(Phase::Deferred {
                                        until_ms,
                                        then: Then::Send {
                                            channel: *channel,
                                            provider: first,
                                            attempt: *attempt,
                                            possible_duplicate: *possible_duplicate,
                                        },
                                    })
                                }
                            }
                        }
                        ErrorClass::ProviderConfig
                            if self.next_provider(*channel, provider).is_some()
                                && *attempt < self.policy().retry(*channel).attempts_max =>
                        {
                            Go(Phase::Sending {
                                channel: *channel,
                                provider: self.next_provider(*channel, provider).unwrap(),
                                attempt: attempt + 1,
                                possible_duplicate: *possible_duplicate,
                            })
                        }
                        ErrorClass::TokenInvalid
                        | ErrorClass::PermanentRecipient
                        | ErrorClass::ProviderConfig => Go(Phase::Failed {
                            channel: *channel,
                            provider: Some(provider.clone()),
                            attempt: *attempt,
                            reason: why,
                        }),
                    }
                }
            },
            // The re-check after the claim: an allow changes nothing, a refusal skips, quiet hours
            // defer the same attempt (it was not used).
            (Phase::Sending { .. }, Event::Rechecked(FilterDecision::Allow { .. })) => Stay(vec![]),
            (Phase::Sending { .. }, Event::Rechecked(FilterDecision::Skip(reason))) => {
                Go(Phase::Skipped(reason.clone()))
            }
            (
                Phase::Sending { channel, provider, attempt, possible_duplicate },
                Event::Rechecked(FilterDecision::Defer { until_ms, .. }),
            ) => Go(self.quiet_hours(
                *channel,
                *until_ms,
                Then::Send {
                    channel: *channel,
                    provider: provider.clone(),
                    attempt: *attempt,
                    possible_duplicate: *possible_duplicate,
                },
            )),
            (Phase::Sending { channel, provider, attempt, .. }, Event::Rendered(Err(error))) => {
                Go(Phase::Failed {
                    channel: *channel,
                    provider: Some(provider.clone()),
                    attempt: *attempt,
                    reason: format!("render failed before attempt {attempt}: {error}"),
                })
            }
            (Phase::Sending { channel, provider, attempt, .. }, Event::Wake) => {
                // Woken while still sending: the lease ran out with no answer recorded.
                Go(Phase::Unknown {
                    channel: *channel,
                    provider: provider.clone(),
                    attempt: *attempt,
                })
            }
            (
                Phase::Sending { channel, provider, attempt, .. }
                | Phase::Unknown { channel, provider, attempt }
                | Phase::Sent { channel, provider, attempt, .. },
                Event::Receipt(Receipt::Delivered),
            ) => Go(Phase::Delivered {
                channel: *channel,
                provider: provider.clone(),
                attempt: *attempt,
            }),

            // unknown: re-send through the retry policy, flagged.
            (Phase::Unknown { channel, provider, attempt }, Event::Wake | Event::Proceed) => {
                let why = format!(
                    "outcome of attempt {attempt} on {provider} is unknown; waiting for a receipt"
                );
                let grace = Some(self.policy().reconcile_grace_ms);
                Go(self.retry_or_fail(*channel, provider, *attempt, grace, true, why))
            }

            // deferred: the queue decides when it is due, so a wake-up resumes it whatever this
            // worker's clock says.
            (Phase::Deferred { then: Then::Filter(channel), .. }, Event::Wake) => {
                // `received` has no entry action: the deferral asks for the filter itself.
                Reaction::GoWith(Phase::Received, vec![Effect::Filter { channel: *channel }])
            }
            (Phase::Deferred { then, .. }, Event::Wake) => Go(match then.clone() {
                Then::Filter(_) => Phase::Received,
                Then::RateCheck(channel) => Phase::Rendered(channel),
                Then::Send { channel, provider, attempt, possible_duplicate } => {
                    Phase::Sending { channel, provider, attempt, possible_duplicate }
                }
            }),

            // deferred re-send after an unknown outcome: a delivery receipt settles it.
            (
                Phase::Deferred {
                    then: Then::Send { channel, provider, attempt, possible_duplicate: true },
                    ..
                },
                Event::Receipt(Receipt::Delivered),
            ) => Go(Phase::Delivered {
                channel: *channel,
                provider: provider.clone(),
                attempt: attempt.saturating_sub(1),
            }),

            // sent: only a receipt moves it.
            (
                Phase::Sent { channel, provider, attempt, .. },
                Event::Receipt(Receipt::Undelivered),
            ) => Go(Phase::Failed {
                channel: *channel,
                provider: Some(provider.clone()),
                attempt: *attempt,
                reason: format!("{provider} reported the message undelivered"),
            }),

            // failed: the fallback decision moves it on; a wake-up asks for it again.
            (Phase::Failed { channel, .. }, Event::Wake | Event::Proceed) => {
                Stay(vec![Effect::Fallback { from: *channel }])
            }
            (Phase::Failed { .. }, Event::Fallback(FallbackDecision::To { channel, .. })) => {
                Go(Phase::Filtered(*channel))
            }
            (
                Phase::Failed { channel, provider, attempt, reason },
                Event::Fallback(FallbackDecision::None { .. }),
            ) => Go(Phase::DeadLettered {
                channel: *channel,
                provider: provider.clone(),
                attempt: *attempt,
                reason: reason.clone(),
            }),

            // Anything else is out of place here and changes nothing.
            _ => Stay(vec![]),
        }
    }

    /// Quiet hours until `until_ms`: wait and resume at `then`, or skip when they end after the
    /// channel's time budget.
    fn quiet_hours(&self, channel: Channel, until_ms: u64, then: Then) -> Phase {
        if until_ms > self.accepted_ms + self.policy().retry(channel).ttl_ms {
            Phase::Skipped(SkipReason::QuietHours { channel, until_ms })
        } else {
            Phase::Deferred { until_ms, then }
        }
    }

    /// After a failed or unknown attempt: a deferred re-send of the next attempt, or failure,
    /// as the channel's retry policy decides.
    fn retry_or_fail(
        &self,
        channel: Channel,
        provider: &ProviderName,
        attempt: u32,
        retry_after_ms: Option<u64>,
        possible_duplicate: bool,
        why: String,
    ) -> Phase {
        let policy = self.policy().retry(channel);
        let decision = policy.after_failure(
            self.seed,
            Attempt(attempt),
            self.accepted_ms,
            self.now_ms,
            retry_after_ms,
        );
        let failed =
            |reason| Phase::Failed { channel, provider: Some(provider.clone()), attempt, reason };
        match decision {
            RetryDecision::RetryAt { at_ms, .. } => Phase::Deferred {
                until_ms: at_ms,
                then: Then::Send {
                    channel,
                    provider: provider.clone(),
                    attempt: attempt + 1,
                    possible_duplicate,
                },
            },
            RetryDecision::Exhausted => {
                failed(format!("{why}; all {} attempts used", policy.attempts_max))
            }
            RetryDecision::Expired => failed(format!(
                "{why}; the next retry would fall after the {} ms time budget",
                policy.ttl_ms
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transitions and their generators
// ---------------------------------------------------------------------------------------------

/// What happens to the notification.
#[derive(Debug, Clone)]
enum Input {
    /// An event fed to the machine.
    Event(Event),
    /// The notification is persisted and restored (a new wake-up, another worker).
    Restart,
    /// A new notification is accepted and replaces the current one (which is usually terminal by
    /// then): a case goes through several lifecycles instead of feeding a finished one for long.
    Submit { policy: usize, channel: Channel, seed: u64 },
    /// An operator replays the notification ([`Event::Replay`]); when it was dead-lettered, the
    /// runner restarts its time budget now and flags its sends when the replay was forced past
    /// an unknown outcome.
    Replay { possible_duplicate: bool },
}

/// One transition: an input at a virtual time. The time is absolute so that shrinking (which
/// removes earlier transitions) keeps a wake-up aimed at the same deadline; a time before the
/// current one means "now" (the clock never goes back).
#[derive(Debug, Clone)]
struct Step {
    at_ms: u64,
    input: Input,
}

fn arb_channel() -> impl Strategy<Value = Channel> {
    select(Channel::ALL.to_vec())
}

/// Time moves on by nothing, a little, a lot, or (rarely) past most time budgets.
fn arb_time(now_ms: u64) -> BoxedStrategy<u64> {
    prop_oneof![
        10 => Just(now_ms),
        15 => now_ms..now_ms + 5_000,
        8 => now_ms..now_ms + 120_000,
        2 => now_ms..now_ms + 3_600_000,
        1 => now_ms..now_ms + 2 * 86_400_000,
    ]
    .boxed()
}

/// A wake-up around a deadline: early, exactly on time, or late.
fn arb_time_around(now_ms: u64, until_ms: u64) -> BoxedStrategy<u64> {
    prop_oneof![
        2 => now_ms.min(until_ms)..=until_ms,
        2 => Just(until_ms),
        1 => until_ms.saturating_sub(1)..=until_ms.saturating_add(1),
        3 => until_ms..until_ms.saturating_add(120_000),
    ]
    .boxed()
}

/// A preference filter decision: mostly allow, sometimes a skip (preferences, no address), and
/// quiet hours until a time that may fall before or after the time budget.
fn arb_filter_decision(channel: Channel, now_ms: u64) -> BoxedStrategy<FilterDecision> {
    // The filter allows the submitted channel; another channel stands for a fallback decision.
    let allowed = prop_oneof![9 => Just(channel), 1 => arb_channel()];
    let rule =
        select(vec!["no opt-out for this channel", "critical category: otp", "per-user override"]);
    let category = steps::model::Category::new("marketing").unwrap();
    prop_oneof![
        7 => (allowed, rule).prop_map(|(channel, rule)| {
            FilterDecision::Allow { channel, rule: rule.to_owned() }
        }),
        1 => prop_oneof![
            Just(SkipReason::OptedOut { channel }),
            Just(SkipReason::NoAddress { channel }),
            Just(SkipReason::Unsubscribed { channel }),
            Just(SkipReason::CategoryOptedOut { category: category.clone(), channel, everywhere: true }),
            Just(SkipReason::NotOptedIn { category, channel }),
        ]
        .prop_map(FilterDecision::Skip),
        // Quiet hours end within ten minutes, within a day (past some budgets), or in two days.
        2 => prop_oneof![
            3 => now_ms + 1..now_ms + 600_000,
            2 => now_ms + 1..now_ms + 86_400_000,
            1 => now_ms + 86_400_000..now_ms + 2 * 86_400_000,
        ]
        .prop_map(move |until_ms| FilterDecision::Defer {
            channel,
            until_ms,
            rule: "quiet hours 22:00–07:00 in Europe/Paris".into(),
        }),
    ]
    .boxed()
}

fn arb_filtered(channel: Channel, now_ms: u64) -> BoxedStrategy<Event> {
    arb_filter_decision(channel, now_ms).prop_map(Event::Filtered).boxed()
}

fn arb_rechecked(channel: Channel, now_ms: u64) -> BoxedStrategy<Event> {
    arb_filter_decision(channel, now_ms).prop_map(Event::Rechecked).boxed()
}

fn arb_render_error(channel: Channel) -> BoxedStrategy<RenderError> {
    let id = TemplateId::new("welcome").unwrap();
    select(vec![
        RenderError::UnknownTemplate(id.clone()),
        RenderError::VersionGone { id: id.clone(), pinned: "v1".into(), loaded: "v2".into() },
        RenderError::NoChannel { id: id.clone(), channel, needs: "sms.txt" },
        RenderError::Template {
            id,
            part: "body.txt",
            message: "Variable `name` is not defined".into(),
        },
    ])
    .boxed()
}

fn arb_rendered(channel: Channel) -> BoxedStrategy<Event> {
    prop_oneof![
        7 => Just(Event::Rendered(Ok(()))),
        1 => arb_render_error(channel).prop_map(|e| Event::Rendered(Err(e))),
    ]
    .boxed()
}

fn arb_limit() -> BoxedStrategy<Limit> {
    prop_oneof![
        Just(Limit::Channel { channel: Channel::Sms, max: 3, window_ms: 600_000 }),
        Just(Limit::Cap {
            category: Category::new("marketing").unwrap(),
            max: 1,
            window_ms: 86_400_000,
        }),
    ]
    .boxed()
}

fn arb_rate_checked(now_ms: u64) -> BoxedStrategy<Event> {
    prop_oneof![
        6 => Just(RateDecision::Allow),
        3 => (now_ms..now_ms + 3_600_000, arb_limit())
            .prop_map(|(until_ms, limit)| RateDecision::Defer { until_ms, limit }),
        // A window that already has room again (a slow worker).
        1 => (now_ms.saturating_sub(30_000)..=now_ms, arb_limit())
            .prop_map(|(until_ms, limit)| RateDecision::Defer { until_ms, limit }),
        1 => arb_limit().prop_map(|limit| RateDecision::Skip { limit }),
    ]
    .prop_map(Event::RateChecked)
    .boxed()
}

fn arb_error_class() -> BoxedStrategy<ErrorClass> {
    let rate_limited = |retry_after_ms| ErrorClass::RateLimited { retry_after_ms };
    prop_oneof![
        3 => Just(ErrorClass::RETRYABLE),
        1 => (1u64..600_000)
            .prop_map(|ms| ErrorClass::Retryable { retry_after_ms: Some(ms) }),
        1 => Just(rate_limited(None)),
        1 => Just(rate_limited(Some(0))),
        1 => (1u64..120_000).prop_map(move |ms| rate_limited(Some(ms))),
        // Longer than most time budgets (parse_retry_after_secs caps at a day).
        1 => (3_600_000u64..=86_400_000).prop_map(move |ms| rate_limited(Some(ms))),
        1 => Just(ErrorClass::TokenInvalid),
        1 => Just(ErrorClass::PermanentRecipient),
        1 => Just(ErrorClass::ProviderConfig),
        2 => Just(ErrorClass::Unknown),
        1 => prop_oneof![Just(None), (1u64..600_000).prop_map(Some)]
            .prop_map(|retry_after_ms| ErrorClass::CircuitOpen { retry_after_ms }),
    ]
    .boxed()
}

/// A provider error as a provider module would classify it.
fn provider_error(class: ErrorClass) -> ProviderError {
    let (status, code, message) = match class {
        ErrorClass::Retryable { .. } => (Some(503), None, "service unavailable"),
        ErrorClass::RateLimited { .. } => (Some(429), Some("20429"), "too many requests"),
        ErrorClass::TokenInvalid => (Some(404), Some("UNREGISTERED"), "token is not registered"),
        ErrorClass::PermanentRecipient => (Some(400), Some("21211"), "invalid 'To' number"),
        ErrorClass::ProviderConfig => (Some(401), None, "authentication failed"),
        ErrorClass::Unknown => (None, None, "timed out after the request was written"),
        ErrorClass::CircuitOpen { .. } => (None, None, "the circuit breaker is open"),
    };
    ProviderError::new(class, status, code.map(str::to_owned), message)
}

fn arb_send_result() -> BoxedStrategy<Event> {
    let message_id = proptest::option::of((0u32..100_000).prop_map(|n| format!("SM{n:05}")));
    prop_oneof![
        3 => (message_id, any::<bool>()).prop_map(|(provider_message_id, delivered)| {
            SendOutcome::Accepted { provider_message_id, delivered }
        }),
        5 => arb_error_class().prop_map(|class| SendOutcome::Failed(provider_error(class))),
    ]
    .prop_map(Event::SendResult)
    .boxed()
}

fn arb_receipt() -> BoxedStrategy<Event> {
    prop_oneof![3 => Just(Receipt::Delivered), 1 => Just(Receipt::Undelivered)]
        .prop_map(Event::Receipt)
        .boxed()
}

fn arb_fallback() -> BoxedStrategy<Event> {
    prop_oneof![
        1 => arb_channel().prop_map(|channel| FallbackDecision::To { channel, why: "fallback".into() }),
        1 => Just(FallbackDecision::None { why: "no fallback".into() }),
    ]
    .prop_map(Event::Fallback)
    .boxed()
}

/// Any event at all, whatever the phase: duplicates, late and out-of-order inputs.
fn arb_any_event(model: &Model) -> BoxedStrategy<Event> {
    prop_oneof![
        3 => Just(Event::Wake),
        2 => Just(Event::Proceed),
        1 => Just(Event::Cancel),
        1 => arb_filtered(model.channel, model.now_ms),
        // Noise comes at any later time: quiet hours that end after the longest step ahead.
        1 => arb_rechecked(model.channel, model.now_ms + 2 * 86_400_000),
        1 => arb_rendered(model.channel),
        1 => arb_rate_checked(model.now_ms),
        2 => arb_send_result(),
        2 => arb_receipt(),
        1 => arb_fallback(),
    ]
    .boxed()
}

fn arb_replay() -> BoxedStrategy<Input> {
    prop_oneof![3 => Just(false), 1 => Just(true)]
        .prop_map(|possible_duplicate| Input::Replay { possible_duplicate })
        .boxed()
}

fn arb_submit() -> BoxedStrategy<Input> {
    (0..POLICIES.len(), arb_channel(), any::<u64>())
        .prop_map(|(policy, channel, seed)| Input::Submit { policy, channel, seed })
        .boxed()
}

/// Events that the phase is waiting for, at an ordinary time.
fn arb_expected(model: &Model) -> BoxedStrategy<Step> {
    let now_ms = model.now_ms;
    let event: BoxedStrategy<Event> = match &model.phase {
        // Anything at all to a finished notification, or a new one; a dead letter is replayed
        // or delivered late, too.
        Phase::DeadLettered { .. } => {
            return prop_oneof![
                2 => arb_any_event(model).prop_map(Input::Event),
                1 => arb_submit(),
                3 => arb_replay(),
                1 => Just(Input::Event(Event::Receipt(Receipt::Delivered))),
            ]
            .prop_flat_map(move |input| {
                arb_time(now_ms).prop_map(move |at_ms| Step { at_ms, input: input.clone() })
            })
            .boxed();
        }
        Phase::Delivered { .. } | Phase::Skipped(_) | Phase::Cancelled => {
            return prop_oneof![
                2 => arb_any_event(model).prop_map(Input::Event),
                1 => arb_submit(),
            ]
            .prop_flat_map(move |input| {
                arb_time(now_ms).prop_map(move |at_ms| Step { at_ms, input: input.clone() })
            })
            .boxed();
        }
        Phase::Received => {
            prop_oneof![1 => Just(Event::Wake), 4 => arb_filtered(model.channel, now_ms)].boxed()
        }
        Phase::Filtered(channel) => {
            prop_oneof![1 => Just(Event::Wake), 4 => arb_rendered(*channel)].boxed()
        }
        Phase::Rendered(_) => {
            prop_oneof![1 => Just(Event::Wake), 4 => arb_rate_checked(now_ms)].boxed()
        }
        Phase::RateChecked(_) | Phase::Unknown { .. } => {
            prop_oneof![3 => Just(Event::Proceed), 1 => Just(Event::Wake)].boxed()
        }
        Phase::Failed { .. } => prop_oneof![
            1 => Just(Event::Proceed),
            1 => Just(Event::Wake),
            4 => arb_fallback(),
        ]
        .boxed(),
        Phase::Sending { channel, .. } => {
            // The re-check's quiet hours end after the moment it runs, as the filter computes.
            let channel = *channel;
            return arb_time(now_ms)
                .prop_flat_map(move |at_ms| {
                    prop_oneof![
                        8 => arb_send_result(),
                        3 => arb_rechecked(channel, at_ms),
                        1 => Just(Event::Wake),
                        1 => Just(Event::Receipt(Receipt::Delivered)),
                    ]
                    .prop_map(move |e| Step { at_ms, input: Input::Event(e) })
                })
                .boxed();
        }
        Phase::Deferred { until_ms, .. } => {
            return arb_time_around(now_ms, *until_ms)
                .prop_map(|at_ms| Step { at_ms, input: Input::Event(Event::Wake) })
                .boxed();
        }
        Phase::Sent { .. } => prop_oneof![3 => arb_receipt(), 1 => Just(Event::Wake)].boxed(),
    };
    (arb_time(now_ms), event).prop_map(|(at_ms, e)| Step { at_ms, input: Input::Event(e) }).boxed()
}

/// A state the lifecycle can reach under `policy` for a notification submitted on `channel`.
fn arb_phase(policy: usize, channel: Channel, now_ms: u64) -> BoxedStrategy<Phase> {
    let p = &POLICIES[policy];
    let max = p.retry(channel).attempts_max;
    // A channel without a route never gets as far as sending; use a name anyway.
    let via = p.route(channel).first().cloned().unwrap_or_else(|| provider("orphan"));
    let attempt = 1..=max;
    // A deferred re-send is for attempt 2 at least.
    let next_attempt = max.min(2)..=max;
    let until = now_ms.saturating_sub(60_000)..now_ms + 600_000;
    let (v1, v2, v3, v4, v5, v6, v7) =
        (via.clone(), via.clone(), via.clone(), via.clone(), via.clone(), via.clone(), via);
    prop_oneof![
        Just(Phase::Filtered(channel)),
        Just(Phase::Rendered(channel)),
        Just(Phase::RateChecked(channel)),
        (attempt.clone(), any::<bool>()).prop_map(move |(attempt, possible_duplicate)| {
            Phase::Sending { channel, provider: v1.clone(), attempt, possible_duplicate }
        }),
        attempt.clone().prop_map(move |attempt| Phase::Unknown {
            channel,
            provider: v2.clone(),
            attempt
        }),
        until
            .clone()
            .prop_map(move |until_ms| Phase::Deferred { until_ms, then: Then::RateCheck(channel) }),
        until
            .clone()
            .prop_map(move |until_ms| Phase::Deferred { until_ms, then: Then::Filter(channel) }),
        (until, next_attempt, any::<bool>()).prop_map(move |(until_ms, attempt, dup)| {
            Phase::Deferred {
                until_ms,
                then: Then::Send {
                    channel,
                    provider: v3.clone(),
                    attempt,
                    possible_duplicate: dup,
                },
            }
        }),
        attempt.clone().prop_map(move |attempt| Phase::Sent {
            channel,
            provider: v4.clone(),
            attempt,
            message_id: Some("SM00001".into()),
        }),
        attempt.clone().prop_map(move |attempt| Phase::Failed {
            channel,
            provider: Some(v5.clone()),
            attempt,
            reason: "earlier failure".into(),
        }),
        attempt.clone().prop_map(move |attempt| Phase::Delivered {
            channel,
            provider: v6.clone(),
            attempt
        }),
        Just(Phase::DeadLettered {
            channel,
            provider: None,
            attempt: 0,
            reason: "render failed".into()
        }),
        attempt.clone().prop_map(move |attempt| Phase::DeadLettered {
            channel,
            provider: Some(v7.clone()),
            attempt,
            reason: "earlier failure".into(),
        }),
        Just(Phase::Skipped(SkipReason::OptedOut { channel })),
        Just(Phase::Cancelled),
    ]
    .boxed()
}

/// Cases per run: 1,000 (about 2 s in a debug build), or `PROPTEST_CASES` for a longer search.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000)
}

/// The reference state machine: generates the starting state and the transitions.
struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        (0..POLICIES.len(), arb_channel(), any::<u64>(), 0u64..60_000)
            .prop_flat_map(|(policy, channel, seed, since_accepted_ms)| {
                let now_ms = ACCEPTED_MS + since_accepted_ms;
                prop_oneof![
                    3 => Just(Phase::Received),
                    2 => arb_phase(policy, channel, now_ms),
                ]
                .prop_map(move |phase| Model {
                    phase,
                    policy,
                    channel,
                    seed,
                    accepted_ms: ACCEPTED_MS,
                    possible_duplicate: false,
                    now_ms,
                    effects: vec![],
                })
            })
            .boxed()
    }

    fn transitions(model: &Model) -> BoxedStrategy<Step> {
        let now_ms = model.now_ms;
        let noise = (arb_time(now_ms), arb_any_event(model))
            .prop_map(|(at_ms, e)| Step { at_ms, input: Input::Event(e) });
        let restart = arb_time(now_ms).prop_map(|at_ms| Step { at_ms, input: Input::Restart });
        // A replay of a notification that is not dead-lettered: the machine ignores it.
        let stray_replay =
            (arb_time(now_ms), arb_replay()).prop_map(|(at_ms, input)| Step { at_ms, input });
        prop_oneof![
            8 => arb_expected(model),
            3 => noise,
            1 => restart,
            1 => stray_replay,
        ]
        .boxed()
    }

    fn apply(mut model: Model, step: &Step) -> Model {
        model.now_ms = model.now_ms.max(step.at_ms);
        model.effects = match &step.input {
            // Restoring re-runs entry actions, and `restore` discards what they push.
            Input::Restart => vec![],
            Input::Submit { policy, channel, seed } => {
                model.phase = Phase::Received;
                model.policy = *policy;
                model.channel = *channel;
                model.seed = *seed;
                model.accepted_ms = model.now_ms;
                model.possible_duplicate = false;
                vec![]
            }
            Input::Replay { possible_duplicate } => match model.react(&Event::Replay) {
                Reaction::Go(phase) => {
                    // The runner's replay commit: a fresh time budget from now, and the flag.
                    model.accepted_ms = model.now_ms;
                    model.possible_duplicate = *possible_duplicate;
                    let effects = phase.on_entry();
                    model.phase = phase;
                    effects
                }
                Reaction::Stay(effects) => effects,
                Reaction::GoWith(phase, effects) => {
                    model.phase = phase;
                    effects
                }
            },
            Input::Event(event) => match model.react(event) {
                Reaction::Stay(effects) => effects,
                Reaction::Go(phase) => {
                    let effects = phase.on_entry();
                    model.phase = phase;
                    effects
                }
                Reaction::GoWith(phase, effects) => {
                    model.phase = phase;
                    effects
                }
            },
        };
        model
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test: the real machine
// ---------------------------------------------------------------------------------------------

/// The real machine, plus what the model-free invariants need to remember.
struct Sut {
    machine: Machine,
    /// Every (channel, attempt) a `Send` effect was emitted for, or that was already sending in
    /// the starting state.
    sent: BTreeSet<(Channel, u32)>,
    /// Whether an earlier attempt of this notification may have gone out unseen.
    possible_duplicate: bool,
}

struct LifecycleTest;

impl StateMachineTest for LifecycleTest {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(model: &Model) -> Sut {
        let state = model.phase.to_state();
        let (sent, possible_duplicate) = match &model.phase {
            Phase::Sending { channel, attempt, possible_duplicate, .. } => {
                (BTreeSet::from([(*channel, *attempt)]), *possible_duplicate)
            }
            Phase::Unknown { .. } => (BTreeSet::new(), true),
            Phase::Deferred { then: Then::Send { possible_duplicate, .. }, .. } => {
                (BTreeSet::new(), *possible_duplicate)
            }
            _ => (BTreeSet::new(), false),
        };
        Sut {
            machine: machine::restore(state, model.policy(), model.channel),
            sent,
            possible_duplicate,
        }
    }

    fn apply(mut sut: Sut, model: &Model, step: Step) -> Sut {
        let policy = model.policy();
        let before = sut.machine.state().clone();
        let effects = match &step.input {
            Input::Restart => {
                let json = serde_json::to_string(&before).unwrap();
                let state: State = serde_json::from_str(&json).unwrap();
                sut.machine = machine::restore(state, policy, model.channel);
                vec![]
            }
            Input::Submit { .. } => {
                sut = LifecycleTest::init_test(model);
                vec![]
            }
            Input::Replay { .. } => {
                let mut context = Context::new(
                    policy,
                    model.channel,
                    model.seed,
                    model.accepted_ms,
                    model.now_ms,
                );
                context.possible_duplicate = model.possible_duplicate;
                sut.machine.handle_with_context(&Event::Replay, &mut context);
                context.effects
            }
            Input::Event(event) => {
                let mut context = Context::new(
                    policy,
                    model.channel,
                    model.seed,
                    model.accepted_ms,
                    model.now_ms,
                );
                context.possible_duplicate = model.possible_duplicate;
                sut.machine.handle_with_context(event, &mut context);
                context.effects
            }
        };
        let after = sut.machine.state();

        // Against the model.
        assert_eq!(after, &model.phase.to_state(), "state after {step:?} from {before:?}");
        assert_eq!(effects, model.effects, "effects of {step:?} from {before:?}");

        // Without the model.
        if before.is_terminal() && !matches!(step.input, Input::Submit { .. }) {
            // Only a dead letter leaves, by a replay or a late delivery receipt.
            let out_of_the_dlq = matches!(before, State::DeadLettered { .. })
                && matches!(
                    step.input,
                    Input::Replay { .. } | Input::Event(Event::Receipt(Receipt::Delivered))
                );
            if !out_of_the_dlq {
                assert_eq!(after, &before, "terminal state moved on {step:?}");
            }
            assert!(
                after == &before || before.kind().may_move_to(after.kind()),
                "{before:?} → {after:?} is not an edge"
            );
            assert!(effects.is_empty(), "terminal state asked for {effects:?} on {step:?}");
        }
        if let (State::DeadLettered { .. }, State::Received {}) = (&before, after) {
            // A replay starts over: attempts from 1, flagged as the replay says.
            sut.sent.clear();
            sut.possible_duplicate = model.possible_duplicate;
        }
        if matches!(after, State::Unknown { .. }) {
            sut.possible_duplicate = true;
        }
        if let (
            State::Sending { channel, attempt, .. },
            Input::Event(Event::SendResult(SendOutcome::Failed(ProviderError {
                class: ErrorClass::CircuitOpen { .. },
                ..
            }))),
        ) = (&before, &step.input)
        {
            // An open breaker sent nothing: the attempt goes out again, on this provider later
            // or on the next one now.
            sut.sent.remove(&(*channel, attempt.0));
        }
        if let (
            State::Sending { channel, attempt, .. },
            State::Deferred { .. },
            Input::Event(Event::Rechecked(FilterDecision::Defer { .. })),
        ) = (&before, after, &step.input)
        {
            // The re-check stopped the claimed attempt before the provider call: it goes out
            // again when quiet hours end.
            sut.sent.remove(&(*channel, attempt.0));
        }
        if let (State::Failed { .. }, State::Filtered { channel }) = (&before, after) {
            // A fallback starts the new channel afresh: its attempts count from 1 and nothing
            // about it is a possible duplicate (the runner only falls back when the failed
            // channel cannot have delivered, and never to a channel it tried), unless a replay
            // was forced past an unknown outcome: then every send is flagged.
            sut.possible_duplicate = model.possible_duplicate;
            sut.sent.retain(|(c, _)| c != channel);
        }
        for effect in &effects {
            if let Effect::Send { channel, attempt, possible_duplicate, .. } = effect {
                let max = policy.retry(*channel).attempts_max;
                assert!((1..=max).contains(&attempt.0), "attempt {attempt} of {max} sent");
                assert!(sut.sent.insert((*channel, attempt.0)), "attempt {attempt} sent twice");
                assert_eq!(
                    *possible_duplicate, sut.possible_duplicate,
                    "possible_duplicate of attempt {attempt} after {step:?}"
                );
            }
        }
        if let (
            State::Sending { attempt, .. } | State::Unknown { attempt, .. },
            State::Deferred { until_ms, resume: Resume::Send { channel, attempt: next, .. } },
            Input::Event(event),
        ) = (&before, after, &step.input)
        {
            let retry = policy.retry(*channel);
            let circuit_open = matches!(
                event,
                Event::SendResult(SendOutcome::Failed(ProviderError {
                    class: ErrorClass::CircuitOpen { .. },
                    ..
                }))
            );
            let quiet_hours = matches!(event, Event::Rechecked(FilterDecision::Defer { .. }));
            if circuit_open || quiet_hours {
                // Nothing was sent: the same attempt waits for the breaker or quiet hours.
                assert_eq!(next.0, attempt.0, "an open breaker or quiet hours use no attempt");
            } else {
                assert_eq!(next.0, attempt.0 + 1, "the retry is the next attempt");
            }
            assert!(*until_ms >= model.now_ms, "a retry scheduled in the past");
            assert!(*until_ms <= model.accepted_ms + retry.ttl_ms, "a retry after the time budget");
            if let Event::SendResult(SendOutcome::Failed(ProviderError {
                class: ErrorClass::RateLimited { retry_after_ms: Some(retry_after_ms) },
                ..
            })) = event
            {
                assert!(*until_ms >= model.now_ms + retry_after_ms, "retried before Retry-After");
            }
        }
        sut
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        assert_eq!(sut.machine.state(), &model.phase.to_state());
        assert_eq!(sut.machine.state().is_terminal(), model.phase.is_terminal());
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 10_000,
        // Failing cases are kept beside this file and replayed first (commit them).
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// The real machine follows the reference model, event for event.
    #[test]
    fn the_machine_follows_the_reference_model(sequential 1..=TRANSITIONS_MAX => LifecycleTest);
}
