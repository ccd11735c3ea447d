//! The notification lifecycle as a statig blocking state machine.
//!
//! ```text
//! received → filtered → rendered → rate_checked → sending → sent → delivered
//!                                                        ↘ failed → dead_lettered
//! any active state → skipped(reason) | cancelled
//! rendered / sending → deferred(until) → back where it was (rate limit, retry backoff)
//! sending → unknown (request written, no answer) → deferred re-send (flagged), or failed;
//!   a delivery receipt for the earlier attempt settles it (unknown / deferred → delivered)
//! failed → filtered(another channel) (fallback: SMS → email) | dead_lettered
//! sending → sending(next provider) (failover when the provider's configuration is broken)
//! dead_lettered → received (an operator's replay: the whole lifecycle again, on the original
//!                 channel, attempts from 1, a fresh time budget)
//! dead_lettered → delivered (a late delivery receipt from the provider it was last with)
//! sending → deferred(reserved slot) → sending (the provider's send rate is used up; no attempt
//!   is used)
//! received → deferred(quiet hours) → received (the filter runs again when they end)
//! deferred → deferred(now) (an operator's retry: a retry backoff, a circuit breaker's wait or a
//!   rate wait ends now; quiet hours and collapse windows are not cut short)
//! sending → skipped | deferred(quiet hours) (the re-check after the claim, before the provider
//!   is called: an opt-out, an unsubscribe, quiet hours or a removed address since the filter)
//! filtered → skipped(collapsed into N) | deferred(collapse window) → filtered (a notification
//!   with a collapse key merges into the open group of its key, or opens one, waits its window,
//!   and renders once for all)
//! also: filtered / rate_checked → failed (render error, no provider);
//!       sending / unknown → delivered (accepted as delivered, or a receipt); sent → failed
//! ```
//!
//! Events go in, [`Effect`]s come out through the [`Context`]; the machine never does I/O and
//! never reads the clock (`context.now_ms` is handed in). Entry actions only push effects, which
//! is what makes restoring a persisted state safe: statig re-runs entry actions on `init`, and
//! [`restore`] discards what they push.
//!
//! Terminal states (delivered, dead_lettered, skipped, cancelled) swallow every event the
//! lifecycle itself produces, so nothing can make them regress. The one exception is
//! dead_lettered, which is terminal for the lifecycle but waits for an operator: it takes
//! exactly two events, an operator's [`Event::Replay`] and a late delivery receipt, along the two
//! edges above ([`StateKind::EDGES`] lists them; nothing else leaves a terminal state).

// statig declares a state's stored data through its handler's parameters, so a handler that does
// not read one of its fields still has to name it.
#![allow(unused_variables, clippy::ptr_arg)]

use serde::{Deserialize, Serialize};
use statig::prelude::*;
use steps::collapse::CollapseDecision;
use steps::fallback::FallbackDecision;
use steps::filter::{FilterDecision, SkipReason};
use steps::limits::Limit;
use steps::model::{Attempt, Category, Channel, ProviderName};
use steps::outcome::{ErrorClass, SendOutcome};
use steps::rate::RateDecision;
use steps::render::RenderError;
use steps::retry::{RetryDecision, RetryPolicy};

use crate::policy::Policy;

/// Where a deferred notification resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "at")]
pub enum Resume {
    /// Close the collapse group this notification opened (its window ended), then render.
    Collapse {
        /// The channel.
        channel: Channel,
    },
    /// Run the preference filter again from `received` (the recipient's quiet hours deferred it;
    /// their preferences may have changed meanwhile).
    Filter {
        /// The channel.
        channel: Channel,
    },
    /// Re-check the rate limit (it was over the limit).
    RateCheck {
        /// The channel.
        channel: Channel,
    },
    /// Send again (a retry after a failed or unknown attempt).
    Send {
        /// The channel.
        channel: Channel,
        /// The provider to use.
        provider: ProviderName,
        /// The attempt that will run.
        attempt: Attempt,
        /// Whether an earlier attempt may have gone out (its outcome was unknown).
        possible_duplicate: bool,
    },
    /// Send at a slot reserved in the provider's send rate (the wake-up time): the same attempt,
    /// which goes out without asking the pacer again.
    SendSlot {
        /// The channel.
        channel: Channel,
        /// The provider whose slot it is.
        provider: ProviderName,
        /// The attempt that will run.
        attempt: Attempt,
        /// Whether an earlier attempt may have gone out (its outcome was unknown).
        possible_duplicate: bool,
    },
}

/// What a receipt (provider webhook) says about a sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Receipt {
    /// The provider delivered it.
    Delivered,
    /// The provider gave up on it (undelivered, dropped, blocked).
    Undelivered,
    /// A hard bounce: the address does not work. Like `Undelivered` for the lifecycle (sent →
    /// failed, then the fallback decides), and the history's note says it bounced.
    Bounced,
}

/// An event fed into the machine.
#[derive(Debug, Clone)]
pub enum Event {
    /// A wake-up: carry on from wherever the notification is.
    Wake,
    /// The preference filter's decision.
    Filtered(FilterDecision),
    /// The template render's result.
    Rendered(Result<(), RenderError>),
    /// The recipient's limits' decision (the channel's window and the category's caps).
    RateChecked(RateDecision),
    /// Move on from a transient state (rate_checked, failed, unknown).
    Proceed,
    /// What the provider call came to.
    SendResult(SendOutcome),
    /// A cancel request.
    Cancel,
    /// A delivery receipt.
    Receipt(Receipt),
    /// The channel fallback decision after a channel failed for good.
    Fallback(FallbackDecision),
    /// An operator replays a dead-lettered notification: it starts over from `received`.
    Replay,
    /// An operator asks a deferred notification to try again now: a wait an operator may cut
    /// short (a retry backoff, a circuit breaker's wait, a rate wait) ends now. Quiet hours and
    /// collapse windows are kept.
    Retry,
    /// What a collapse step came to (joining a group, or closing one).
    Collapsed(CollapseDecision),
    /// The provider's send rate is used up: the send holds a slot at `until_ms` (`reserved`), or
    /// the first free slot is later than the message can wait.
    Throttled {
        /// The slot.
        until_ms: u64,
        /// Whether the slot is reserved for this send.
        reserved: bool,
    },
    /// The preference filter again, after the send was claimed and before the provider hears of
    /// it: an opt-out, an unsubscribe, quiet hours or a removed address since the first filter
    /// stop the send here.
    Rechecked(FilterDecision),
}

impl Event {
    /// The event's name in history entries.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Wake => "wake",
            Event::Filtered(_) => "filtered",
            Event::Rendered(_) => "rendered",
            Event::RateChecked(_) => "rate_checked",
            Event::Proceed => "proceed",
            Event::SendResult(_) => "send_result",
            Event::Cancel => "cancel",
            Event::Receipt(_) => "receipt",
            Event::Fallback(_) => "fallback",
            Event::Replay => "replay",
            Event::Retry => "retry",
            Event::Throttled { .. } => "throttled",
            Event::Collapsed(_) => "collapsed",
            Event::Rechecked(_) => "rechecked",
        }
    }
}

/// Something the machine asks the shell to do. The answer comes back as an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Run the preference filter for the channel → [`Event::Filtered`].
    Filter {
        /// The channel.
        channel: Channel,
    },
    /// Render the pinned template for the channel → [`Event::Rendered`].
    Render {
        /// The channel.
        channel: Channel,
    },
    /// Take a slot in each of the recipient's windows (the channel's rate limit, the category's
    /// caps), all or nothing → [`Event::RateChecked`].
    AcquireRate {
        /// The channel.
        channel: Channel,
    },
    /// Feed [`Event::Proceed`] right away (a transient state moves on).
    Proceed,
    /// Claim the send durably, call the provider → [`Event::SendResult`].
    Send {
        /// The channel.
        channel: Channel,
        /// The provider.
        provider: ProviderName,
        /// The attempt number.
        attempt: Attempt,
        /// Whether an earlier attempt's outcome was unknown (flagged in the history).
        possible_duplicate: bool,
    },
    /// Wake the notification up at `at_ms`.
    Wake {
        /// When, in ms since the Unix epoch.
        at_ms: u64,
    },
    /// Join (or open) the recipient's collapse group of the notification's key on the channel →
    /// [`Event::Collapsed`].
    Collapse {
        /// The channel.
        channel: Channel,
    },
    /// Close the collapse group this notification opened → [`Event::Collapsed`] (`Closed`).
    CollapseClose {
        /// The channel.
        channel: Channel,
    },
    /// Decide the channel fallback after `from` failed for good → [`Event::Fallback`].
    Fallback {
        /// The channel that failed.
        from: Channel,
    },
}

/// What the machine reads and writes while handling one event.
#[derive(Debug)]
pub struct Context<'a> {
    /// The time of the event, ms since the Unix epoch (handed in: the machine has no clock).
    pub now_ms: u64,
    /// The notification's seed (retry jitter).
    pub seed: u64,
    /// When the retry time budget started: when the notification was accepted, or when an
    /// operator's replay restarted it (`Record::budget_from_ms`).
    pub accepted_at_ms: u64,
    /// The channel the notification was submitted for.
    pub channel: Channel,
    /// The notification's category, which may override the channel's retry policy.
    pub category: Option<&'a Category>,
    /// The policies in force.
    pub policy: &'a Policy,
    /// Whether every send may duplicate an attempt made before an operator's replay, whose
    /// outcome was unknown (`Record::possible_duplicate`): the first send is then flagged too.
    pub possible_duplicate: bool,
    /// The collapse window, when the notification collapses (it has a `collapse_key` and its
    /// category a window): it joins a group before it is rendered.
    pub collapse_window_ms: Option<u64>,
    /// Effects pushed while handling the event, in order.
    pub effects: Vec<Effect>,
    /// The decision inputs that mattered, recorded in the history entry of the transition.
    pub note: Option<String>,
}

impl<'a> Context<'a> {
    /// A context for handling events at `now_ms`.
    pub fn new(
        policy: &'a Policy,
        channel: Channel,
        seed: u64,
        accepted_at_ms: u64,
        now_ms: u64,
    ) -> Self {
        Self {
            now_ms,
            seed,
            accepted_at_ms,
            channel,
            category: None,
            policy,
            possible_duplicate: false,
            collapse_window_ms: None,
            effects: Vec::new(),
            note: None,
        }
    }

    /// The same context for a notification of `category`.
    pub fn with_category(mut self, category: &'a Category) -> Self {
        self.category = Some(category);
        self
    }

    /// The retry policy for `channel` in this notification's category.
    pub fn retry(&self, channel: Channel) -> &'a RetryPolicy {
        match self.category {
            Some(category) => self.policy.retry_for(category, channel),
            None => self.policy.retry(channel),
        }
    }

    fn note(&mut self, note: impl Into<String>) {
        self.note = Some(note.into());
    }

    /// What follows a quiet-hours deferral to `until_ms` on `channel`: waiting until then and
    /// resuming at `resume`, or, when that is past the time budget, a skip (a message is never
    /// dropped for quiet hours alone, only when it would stop mattering before they end).
    fn quiet_hours(
        &mut self,
        channel: Channel,
        until_ms: u64,
        rule: &str,
        resume: Resume,
    ) -> State {
        let budget_end = self.accepted_at_ms.saturating_add(self.retry(channel).ttl_ms);
        if until_ms > budget_end {
            let reason = SkipReason::QuietHours { channel, until_ms };
            self.note(format!(
                "{rule}; that is {} ms after the time budget ends: {reason}",
                until_ms - budget_end
            ));
            return State::skipped(reason);
        }
        self.note(format!("{rule}; waits {} ms", until_ms.saturating_sub(self.now_ms)));
        State::deferred(until_ms, resume)
    }

    /// What follows a failed or unknown attempt: a deferred retry, or failure.
    fn after_failure(
        &mut self,
        channel: Channel,
        provider: &ProviderName,
        attempt: Attempt,
        retry_after_ms: Option<u64>,
        possible_duplicate: bool,
        why: &str,
    ) -> State {
        let policy = self.retry(channel);
        match policy.after_failure(
            self.seed,
            attempt,
            self.accepted_at_ms,
            self.now_ms,
            retry_after_ms,
        ) {
            RetryDecision::RetryAt { at_ms, delay_ms } => {
                let mut note = format!(
                    "{why}; retry {} of {} in {} ms (policy delay {} ms",
                    attempt.0,
                    policy.attempts_max.saturating_sub(1),
                    at_ms.saturating_sub(self.now_ms),
                    delay_ms
                );
                if let Some(floor_ms) = retry_after_ms {
                    note.push_str(&format!(", not before {floor_ms} ms"));
                }
                note.push(')');
                if possible_duplicate {
                    note.push_str("; the re-send is flagged as a possible duplicate");
                }
                self.note(note);
                State::deferred(
                    at_ms,
                    Resume::Send {
                        channel,
                        provider: provider.clone(),
                        attempt: attempt.next(),
                        possible_duplicate,
                    },
                )
            }
            RetryDecision::Exhausted => {
                let reason = format!("{why}; all {} attempts used", policy.attempts_max);
                self.note(reason.clone());
                State::failed(channel, Some(provider.clone()), attempt, reason)
            }
            RetryDecision::Expired => {
                let reason = format!(
                    "{why}; the next retry would fall after the {} ms time budget",
                    policy.ttl_ms
                );
                self.note(reason.clone());
                State::failed(channel, Some(provider.clone()), attempt, reason)
            }
        }
    }
}

/// The machine's shared storage: nothing. All data lives in the states and the context.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lifecycle;

#[state_machine(
    initial = "State::received()",
    state(derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)),
    superstate(derive(Debug))
)]
impl Lifecycle {
    /// Accepted, nothing decided yet.
    #[state(superstate = "active")]
    fn received(context: &mut Context<'_>, event: &Event) -> Outcome<State> {
        match event {
            Event::Wake => {
                context.effects.push(Effect::Filter { channel: context.channel });
                Handled
            }
            Event::Filtered(FilterDecision::Allow { channel, rule }) => {
                context.note(rule.clone());
                Transition(State::filtered(*channel))
            }
            Event::Filtered(FilterDecision::Skip(reason)) => {
                context.note(reason.to_string());
                Transition(State::skipped(reason.clone()))
            }
            Event::Filtered(FilterDecision::Defer { channel, until_ms, rule }) => {
                Transition(context.quiet_hours(
                    *channel,
                    *until_ms,
                    rule,
                    Resume::Filter { channel: *channel },
                ))
            }
            _ => Super,
        }
    }

    /// Allowed on `channel`; rendering next (a collapsing notification joins its group first).
    #[state(superstate = "active", entry_action = "enter_filtered")]
    fn filtered(channel: &mut Channel, context: &mut Context<'_>, event: &Event) -> Outcome<State> {
        match event {
            Event::Wake => {
                enter_filtered_effect(*channel, context);
                Handled
            }
            Event::Rendered(Ok(())) => Transition(State::rendered(*channel)),
            Event::Rendered(Err(error)) => {
                let reason = format!("render failed: {error}");
                context.note(reason.clone());
                Transition(State::failed(*channel, None, Attempt(0), reason))
            }
            Event::Collapsed(CollapseDecision::Merged { into }) => {
                context.note(format!(
                    "collapsed into notification {into}, whose message carries this one's data"
                ));
                Transition(State::skipped(SkipReason::Collapsed { into: into.clone() }))
            }
            Event::Collapsed(CollapseDecision::Wait { until_ms }) => {
                let budget_end =
                    context.accepted_at_ms.saturating_add(context.retry(*channel).ttl_ms);
                if *until_ms > budget_end {
                    // Waiting out the window would outlast the message's time budget: close the
                    // group now and go with what it holds.
                    context.effects.push(Effect::CollapseClose { channel: *channel });
                    return Handled;
                }
                context.note(format!(
                    "opened a collapse group; waits {} ms for others to merge into it",
                    until_ms.saturating_sub(context.now_ms)
                ));
                Transition(State::deferred(*until_ms, Resume::Collapse { channel: *channel }))
            }
            Event::Collapsed(CollapseDecision::Closed { .. }) => {
                context.effects.push(Effect::Render { channel: *channel });
                Handled
            }
            _ => Super,
        }
    }

    #[action]
    fn enter_filtered(channel: &mut Channel, context: &mut Context<'_>) {
        enter_filtered_effect(*channel, context);
    }

    /// Rendered; the rate limit next.
    #[state(superstate = "active", entry_action = "enter_rendered")]
    fn rendered(channel: &mut Channel, context: &mut Context<'_>, event: &Event) -> Outcome<State> {
        match event {
            Event::Wake => {
                context.effects.push(Effect::AcquireRate { channel: *channel });
                Handled
            }
            Event::RateChecked(RateDecision::Allow) => Transition(State::rate_checked(*channel)),
            Event::RateChecked(RateDecision::Defer { until_ms, limit }) => {
                let budget_end =
                    context.accepted_at_ms.saturating_add(context.retry(*channel).ttl_ms);
                if *until_ms > budget_end {
                    // Waiting for room in the window would make the message worthless (an OTP
                    // an hour late): skip it, with the reason.
                    let reason = SkipReason::Expired { channel: *channel };
                    context.note(format!(
                        "{limit} is reached and has room only {} ms after the time budget ends",
                        until_ms - budget_end
                    ));
                    return Transition(State::skipped(reason));
                }
                context.note(format!(
                    "{limit} is reached; deferred {} ms until it has room",
                    until_ms.saturating_sub(context.now_ms)
                ));
                Transition(State::deferred(*until_ms, Resume::RateCheck { channel: *channel }))
            }
            Event::RateChecked(RateDecision::Skip { limit }) => {
                let reason = match limit {
                    Limit::Channel { channel, .. } => SkipReason::RateLimited { channel: *channel },
                    Limit::Cap { category, max, window_ms } => SkipReason::Capped {
                        category: category.clone(),
                        max: *max,
                        window_ms: *window_ms,
                    },
                };
                context.note(format!("{limit} is reached and its policy is to skip"));
                Transition(State::skipped(reason))
            }
            _ => Super,
        }
    }

    #[action]
    fn enter_rendered(channel: &mut Channel, context: &mut Context<'_>) {
        context.effects.push(Effect::AcquireRate { channel: *channel });
    }

    /// Within the rate limit; a provider is picked next.
    #[state(superstate = "active", entry_action = "enter_transient")]
    fn rate_checked(
        channel: &mut Channel,
        context: &mut Context<'_>,
        event: &Event,
    ) -> Outcome<State> {
        match event {
            Event::Wake | Event::Proceed => match context.policy.route(*channel).first() {
                Some(provider) => {
                    let flagged = context.possible_duplicate;
                    let mut note = format!("provider {provider} is first in the {channel} route");
                    if flagged {
                        note.push_str(
                            "; the send is flagged as a possible duplicate (replayed although an \
                             earlier attempt's outcome was unknown)",
                        );
                    }
                    context.note(note);
                    Transition(State::sending(*channel, provider.clone(), Attempt::FIRST, flagged))
                }
                None => {
                    let reason = format!("no provider is configured for {channel}");
                    context.note(reason.clone());
                    Transition(State::failed(*channel, None, Attempt(0), reason))
                }
            },
            _ => Super,
        }
    }

    #[action]
    fn enter_transient(context: &mut Context<'_>) {
        context.effects.push(Effect::Proceed);
    }

    /// The send is claimed and the provider is being called. Not cancellable: the request may be
    /// on the wire already.
    #[state(entry_action = "enter_sending")]
    fn sending(
        channel: &mut Channel,
        provider: &mut ProviderName,
        attempt: &mut Attempt,
        possible_duplicate: &mut bool,
        context: &mut Context<'_>,
        event: &Event,
    ) -> Outcome<State> {
        match event {
            Event::SendResult(SendOutcome::Accepted { provider_message_id, delivered }) => {
                let id = provider_message_id.as_deref().unwrap_or("none");
                context.note(format!("{provider} accepted attempt {attempt} (message id {id})"));
                if *delivered {
                    Transition(State::delivered(*channel, provider.clone(), *attempt))
                } else {
                    Transition(State::sent(
                        *channel,
                        provider.clone(),
                        *attempt,
                        provider_message_id.clone(),
                    ))
                }
            }
            Event::SendResult(SendOutcome::Failed(error)) => {
                let why = format!("{provider} attempt {attempt} failed: {error}");
                match error.class {
                    ErrorClass::Retryable { retry_after_ms }
                    | ErrorClass::RateLimited { retry_after_ms } => {
                        Transition(context.after_failure(
                            *channel,
                            provider,
                            *attempt,
                            retry_after_ms,
                            *possible_duplicate,
                            &why,
                        ))
                    }
                    ErrorClass::Unknown => {
                        context.note(format!("{why}; outcome unknown"));
                        Transition(State::unknown(*channel, provider.clone(), *attempt))
                    }
                    ErrorClass::ProviderConfig => {
                        // Our side of this provider is broken (credentials, sender): the next
                        // provider of the route may work, right away.
                        let route = context.policy.route(*channel);
                        let next = route.iter().skip_while(|p| *p != provider).nth(1).cloned();
                        let max = context.retry(*channel).attempts_max;
                        match next {
                            Some(next) if attempt.0 < max => {
                                context.note(format!("{why}; failing over to {next}"));
                                Transition(State::sending(
                                    *channel,
                                    next,
                                    attempt.next(),
                                    *possible_duplicate,
                                ))
                            }
                            _ => {
                                context.note(why.clone());
                                Transition(State::failed(
                                    *channel,
                                    Some(provider.clone()),
                                    *attempt,
                                    why,
                                ))
                            }
                        }
                    }
                    ErrorClass::CircuitOpen { retry_after_ms } => {
                        // Nothing went out and no attempt was used: try the next provider of the
                        // route now, or this one when its breaker lets a probe through.
                        let route = context.policy.route(*channel);
                        let next = route.iter().skip_while(|p| *p != provider).nth(1).cloned();
                        if let Some(next) = next {
                            context.note(format!(
                                "the circuit breaker of {provider} is open; failing over to {next}"
                            ));
                            return Transition(State::sending(
                                *channel,
                                next,
                                *attempt,
                                *possible_duplicate,
                            ));
                        }
                        let first = route.first().cloned().unwrap_or_else(|| provider.clone());
                        let until_ms = context.now_ms + retry_after_ms.unwrap_or(1_000).max(1);
                        let budget_end =
                            context.accepted_at_ms.saturating_add(context.retry(*channel).ttl_ms);
                        if until_ms > budget_end {
                            let reason = format!(
                                "the circuit breakers of the {channel} route stay open past the \
                                 time budget"
                            );
                            context.note(reason.clone());
                            return Transition(State::failed(
                                *channel,
                                Some(provider.clone()),
                                *attempt,
                                reason,
                            ));
                        }
                        context.note(format!(
                            "the circuit breaker of {provider} is open and no provider is left in \
                             the {channel} route; attempt {attempt} waits {} ms for {first}",
                            until_ms - context.now_ms
                        ));
                        Transition(State::deferred(
                            until_ms,
                            Resume::Send {
                                channel: *channel,
                                provider: first,
                                attempt: *attempt,
                                possible_duplicate: *possible_duplicate,
                            },
                        ))
                    }
                    ErrorClass::TokenInvalid | ErrorClass::PermanentRecipient => {
                        context.note(why.clone());
                        Transition(State::failed(*channel, Some(provider.clone()), *attempt, why))
                    }
                }
            }
            Event::Throttled { until_ms, reserved } => {
                let rate = context.policy.send_rate(provider).copied();
                let rate = rate
                    .map_or_else(String::new, |r| format!(" ({} per {} ms)", r.max, r.window_ms));
                if !*reserved {
                    let reason = format!(
                        "the send rate of {provider}{rate} has no free slot before the time \
                         budget ends (first free in {} ms)",
                        until_ms.saturating_sub(context.now_ms)
                    );
                    context.note(reason.clone());
                    return Transition(State::failed(
                        *channel,
                        Some(provider.clone()),
                        *attempt,
                        reason,
                    ));
                }
                context.note(format!(
                    "the send rate of {provider}{rate} is used up; attempt {attempt} holds a slot \
                     in {} ms",
                    until_ms.saturating_sub(context.now_ms)
                ));
                Transition(State::deferred(
                    *until_ms,
                    Resume::SendSlot {
                        channel: *channel,
                        provider: provider.clone(),
                        attempt: *attempt,
                        possible_duplicate: *possible_duplicate,
                    },
                ))
            }
            Event::Rechecked(FilterDecision::Allow { .. }) => Handled,
            Event::Rechecked(FilterDecision::Skip(reason)) => {
                context.note(format!(
                    "{reason}; re-checked after attempt {attempt} was claimed, before {provider} \
                     was called"
                ));
                Transition(State::skipped(reason.clone()))
            }
            // The decision is about this state's channel; its own `channel` is not read, so a
            // stray decision can never move the send to another channel.
            Event::Rechecked(FilterDecision::Defer { until_ms, rule, .. }) => {
                let resume = Resume::Send {
                    channel: *channel,
                    provider: provider.clone(),
                    attempt: *attempt,
                    possible_duplicate: *possible_duplicate,
                };
                let rule = format!(
                    "{rule}; re-checked after attempt {attempt} was claimed, before {provider} \
                     was called (the attempt is not used)"
                );
                Transition(context.quiet_hours(*channel, *until_ms, &rule, resume))
            }
            Event::Rendered(Err(error)) => {
                let reason = format!("render failed before attempt {attempt}: {error}");
                context.note(reason.clone());
                Transition(State::failed(*channel, Some(provider.clone()), *attempt, reason))
            }
            Event::Wake => {
                // The version still matches, so no answer was recorded before the lease ran out:
                // the worker died mid-call. The request may have gone out.
                context.note(format!(
                    "the send lease of attempt {attempt} on {provider} expired with no recorded answer"
                ));
                Transition(State::unknown(*channel, provider.clone(), *attempt))
            }
            Event::Receipt(Receipt::Delivered) => {
                context.note("a delivery receipt arrived before the answer was recorded");
                Transition(State::delivered(*channel, provider.clone(), *attempt))
            }
            _ => Handled,
        }
    }

    #[action]
    fn enter_sending(
        channel: &mut Channel,
        provider: &mut ProviderName,
        attempt: &mut Attempt,
        possible_duplicate: &mut bool,
        context: &mut Context<'_>,
    ) {
        context.effects.push(Effect::Send {
            channel: *channel,
            provider: provider.clone(),
            attempt: *attempt,
            possible_duplicate: *possible_duplicate,
        });
    }

    /// The request was written but no answer came. It is reconciled before any re-send: the
    /// re-send waits at least `reconcile_grace_ms` (and the retry policy's delay), is flagged as
    /// a possible duplicate, and a delivery receipt for the attempt arriving meanwhile settles
    /// the notification instead. Provider status lookups arrive with the providers' work.
    #[state(entry_action = "enter_transient")]
    fn unknown(
        channel: &mut Channel,
        provider: &mut ProviderName,
        attempt: &mut Attempt,
        context: &mut Context<'_>,
        event: &Event,
    ) -> Outcome<State> {
        match event {
            Event::Wake | Event::Proceed => {
                // Reconcile before any re-send: wait at least the grace period, during which a
                // delivery receipt for this attempt settles it (see `deferred`).
                let grace_ms = context.policy.reconcile_grace_ms;
                let why = format!(
                    "outcome of attempt {attempt} on {provider} is unknown; waiting for a receipt"
                );
                Transition(context.after_failure(
                    *channel,
                    provider,
                    *attempt,
                    Some(grace_ms),
                    true,
                    &why,
                ))
            }
            Event::Receipt(Receipt::Delivered) => {
                context.note("a delivery receipt settled the unknown outcome");
                Transition(State::delivered(*channel, provider.clone(), *attempt))
            }
            _ => Handled,
        }
    }

    /// Waiting until `until_ms`, then resuming.
    #[state(superstate = "active", entry_action = "enter_deferred")]
    fn deferred(
        until_ms: &mut u64,
        resume: &mut Resume,
        context: &mut Context<'_>,
        event: &Event,
    ) -> Outcome<State> {
        match event {
            Event::Wake => {
                // The queue decides when a deferral is over: its wake-up carries this version, so
                // it is this deferral's own timer. A worker whose clock is behind would otherwise
                // send it back to sleep over and over until its clock caught up.
                if context.now_ms < *until_ms {
                    context.note(format!(
                        "woken {} ms before the deferral's end by this worker's clock (clock skew)",
                        *until_ms - context.now_ms
                    ));
                }
                match resume.clone() {
                    Resume::Collapse { channel } => {
                        context.effects.push(Effect::CollapseClose { channel });
                        Handled
                    }
                    Resume::Filter { channel } => {
                        // `received` has no entry action (a replay into it schedules its own
                        // wake-up), so ask for the filter here.
                        context.effects.push(Effect::Filter { channel });
                        Transition(State::received())
                    }
                    Resume::RateCheck { channel } => Transition(State::rendered(channel)),
                    Resume::Send { channel, provider, attempt, possible_duplicate }
                    | Resume::SendSlot { channel, provider, attempt, possible_duplicate } => {
                        Transition(State::sending(channel, provider, attempt, possible_duplicate))
                    }
                }
            }
            Event::Collapsed(CollapseDecision::Closed { count }) => match resume {
                Resume::Collapse { channel } => {
                    context.note(format!(
                        "the collapse window ended: one message for {count} notification(s)"
                    ));
                    Transition(State::filtered(*channel))
                }
                _ => Super,
            },
            Event::Retry => {
                let (resume, then) = match resume.clone() {
                    // A retry backoff, or a circuit breaker's wait: the send goes now (a breaker
                    // still open answers again, and the send waits again).
                    Resume::Send { .. } => (resume.clone(), "the send"),
                    // The recipient's limits are asked again: still full, it waits again.
                    Resume::RateCheck { .. } => (resume.clone(), "the rate check"),
                    // A reserved slot of the provider's send rate is not used early: the send
                    // asks the send rate again, so the provider's rate still holds.
                    Resume::SendSlot { channel, provider, attempt, possible_duplicate } => (
                        Resume::Send { channel, provider, attempt, possible_duplicate },
                        "the send, asking the provider's send rate again,",
                    ),
                    // The recipient's quiet hours, and a collapse window others merge into, are
                    // not the operator's to cut short.
                    Resume::Filter { .. } | Resume::Collapse { .. } => return Handled,
                };
                if *until_ms <= context.now_ms {
                    // Due already: its wake-up is on its way.
                    return Handled;
                }
                context.note(format!(
                    "an operator asked to retry now: {then} runs now instead of in {} ms",
                    *until_ms - context.now_ms
                ));
                Transition(State::deferred(context.now_ms, resume))
            }
            Event::Receipt(Receipt::Delivered) => match resume {
                // A re-send is waiting because an earlier attempt's outcome was unknown, and the
                // receipt says that attempt arrived: settle it, and never send it again.
                Resume::Send { channel, provider, attempt, possible_duplicate: true }
                | Resume::SendSlot { channel, provider, attempt, possible_duplicate: true } => {
                    context.note(format!(
                        "a delivery receipt settled the unknown outcome before re-send {attempt}"
                    ));
                    let earlier = Attempt(attempt.0.saturating_sub(1));
                    Transition(State::delivered(*channel, provider.clone(), earlier))
                }
                _ => Super,
            },
            _ => Super,
        }
    }

    #[action]
    fn enter_deferred(until_ms: &mut u64, context: &mut Context<'_>) {
        context.effects.push(Effect::Wake { at_ms: *until_ms });
    }

    /// Handed to the provider; waiting for a receipt (there may never be one).
    #[state]
    fn sent(
        channel: &mut Channel,
        provider: &mut ProviderName,
        attempt: &mut Attempt,
        provider_message_id: &mut Option<String>,
        context: &mut Context<'_>,
        event: &Event,
    ) -> Outcome<State> {
        match event {
            Event::Receipt(Receipt::Delivered) => {
                Transition(State::delivered(*channel, provider.clone(), *attempt))
            }
            Event::Receipt(Receipt::Undelivered) => {
                let reason = format!("{provider} reported the message undelivered");
                context.note(reason.clone());
                Transition(State::failed(*channel, Some(provider.clone()), *attempt, reason))
            }
            Event::Receipt(Receipt::Bounced) => {
                let reason =
                    format!("{provider} reported a hard bounce: the address does not work");
                context.note(format!("bounced: {reason}"));
                Transition(State::failed(*channel, Some(provider.clone()), *attempt, reason))
            }
            _ => Handled,
        }
    }

    /// Failed for good on its channel; the channel fallback decides what follows: another
    /// channel, or the dead-letter queue.
    #[state(entry_action = "enter_failed")]
    fn failed(
        channel: &mut Channel,
        provider: &mut Option<ProviderName>,
        attempt: &mut Attempt,
        reason: &mut String,
        context: &mut Context<'_>,
        event: &Event,
    ) -> Outcome<State> {
        match event {
            Event::Wake | Event::Proceed => {
                context.effects.push(Effect::Fallback { from: *channel });
                Handled
            }
            Event::Fallback(FallbackDecision::To { channel: next, why }) => {
                context.note(why.clone());
                Transition(State::filtered(*next))
            }
            Event::Fallback(FallbackDecision::None { why }) => {
                context.note(why.clone());
                Transition(State::dead_lettered(
                    *channel,
                    provider.clone(),
                    *attempt,
                    reason.clone(),
                ))
            }
            _ => Handled,
        }
    }

    #[action]
    fn enter_failed(channel: &mut Channel, context: &mut Context<'_>) {
        context.effects.push(Effect::Fallback { from: *channel });
    }

    /// Delivered. Terminal.
    #[state]
    fn delivered(
        channel: &mut Channel,
        provider: &mut ProviderName,
        attempt: &mut Attempt,
        event: &Event,
    ) -> Outcome<State> {
        let _ = event;
        Handled
    }

    /// Given up on, kept in the dead-letter queue for an operator. Terminal for the lifecycle:
    /// only an operator's replay or a late delivery receipt moves it. `provider` is the one it
    /// was last with (records stored before it was kept lack it; serde reads a missing `Option`
    /// field as `None`).
    #[state]
    fn dead_lettered(
        channel: &mut Channel,
        provider: &mut Option<ProviderName>,
        attempt: &mut Attempt,
        reason: &mut String,
        context: &mut Context<'_>,
        event: &Event,
    ) -> Outcome<State> {
        match event {
            Event::Replay => {
                context.note(format!(
                    "replayed from the dead-letter queue; it was dead-lettered on {channel} \
                     after attempt {attempt}: {reason}"
                ));
                Transition(State::received())
            }
            // The runner only feeds receipts from the provider the notification was last with:
            // the message arrived after all, so it leaves the dead-letter queue and no replay
            // will send it again.
            Event::Receipt(Receipt::Delivered) => match provider {
                Some(provider) => {
                    context.note(format!(
                        "a late delivery receipt from {provider}: attempt {attempt} arrived \
                         after it was dead-lettered"
                    ));
                    Transition(State::delivered(*channel, provider.clone(), *attempt))
                }
                None => Handled,
            },
            _ => Handled,
        }
    }

    /// Not sent, on purpose. Terminal.
    #[state]
    fn skipped(reason: &mut SkipReason, event: &Event) -> Outcome<State> {
        let _ = event;
        Handled
    }

    /// Cancelled by the application or an operator. Terminal.
    #[state]
    fn cancelled(event: &Event) -> Outcome<State> {
        let _ = event;
        Handled
    }

    /// The states that may still be cancelled.
    #[superstate]
    fn active(context: &mut Context<'_>, event: &Event) -> Outcome<State> {
        match event {
            Event::Cancel => {
                context.note("cancel requested");
                Transition(State::cancelled())
            }
            _ => Handled,
        }
    }
}

/// What `filtered` asks for first: the collapse step for a collapsing notification, else the
/// render.
fn enter_filtered_effect(channel: Channel, context: &mut Context<'_>) {
    let effect = match context.collapse_window_ms {
        Some(_) => Effect::Collapse { channel },
        None => Effect::Render { channel },
    };
    context.effects.push(effect);
}

/// The kind of a state, without its data: index names, filters and table columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// See [`State::Received`].
    Received,
    /// See [`State::Filtered`].
    Filtered,
    /// See [`State::Rendered`].
    Rendered,
    /// See [`State::RateChecked`].
    RateChecked,
    /// See [`State::Sending`].
    Sending,
    /// See [`State::Unknown`].
    Unknown,
    /// See [`State::Deferred`].
    Deferred,
    /// See [`State::Sent`].
    Sent,
    /// See [`State::Failed`].
    Failed,
    /// See [`State::Delivered`].
    Delivered,
    /// See [`State::DeadLettered`].
    DeadLettered,
    /// See [`State::Skipped`].
    Skipped,
    /// See [`State::Cancelled`].
    Cancelled,
}

impl StateKind {
    /// Every kind.
    pub const ALL: [StateKind; 13] = [
        StateKind::Received,
        StateKind::Filtered,
        StateKind::Rendered,
        StateKind::RateChecked,
        StateKind::Sending,
        StateKind::Unknown,
        StateKind::Deferred,
        StateKind::Sent,
        StateKind::Failed,
        StateKind::Delivered,
        StateKind::DeadLettered,
        StateKind::Skipped,
        StateKind::Cancelled,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Received => "received",
            StateKind::Filtered => "filtered",
            StateKind::Rendered => "rendered",
            StateKind::RateChecked => "rate_checked",
            StateKind::Sending => "sending",
            StateKind::Unknown => "unknown",
            StateKind::Deferred => "deferred",
            StateKind::Sent => "sent",
            StateKind::Failed => "failed",
            StateKind::Delivered => "delivered",
            StateKind::DeadLettered => "dead_lettered",
            StateKind::Skipped => "skipped",
            StateKind::Cancelled => "cancelled",
        }
    }

    /// Parses a snake_case name.
    pub fn parse(s: &str) -> Option<StateKind> {
        StateKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the state is final for the lifecycle: nothing it does itself changes it any more.
    /// Only `dead_lettered` may still move, and only by an operator's replay or a late delivery
    /// receipt (see [`StateKind::EDGES`]).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StateKind::Delivered
                | StateKind::DeadLettered
                | StateKind::Skipped
                | StateKind::Cancelled
        )
    }
}

impl StateKind {
    /// Every transition the lifecycle may make, as (from, to). The module diagram, as data: the
    /// simulator checks every committed transition against it.
    pub const EDGES: [(StateKind, StateKind); 39] = {
        use StateKind as K;
        [
            (K::Received, K::Filtered),
            (K::Received, K::Skipped),
            (K::Received, K::Cancelled),
            (K::Filtered, K::Rendered),
            (K::Filtered, K::Failed),
            (K::Filtered, K::Cancelled),
            // Collapse: merged into another's group, or waiting for the group's window.
            (K::Filtered, K::Skipped),
            (K::Filtered, K::Deferred),
            (K::Rendered, K::RateChecked),
            (K::Rendered, K::Deferred),
            (K::Rendered, K::Skipped),
            (K::Rendered, K::Cancelled),
            (K::RateChecked, K::Sending),
            (K::RateChecked, K::Failed),
            (K::RateChecked, K::Cancelled),
            (K::Sending, K::Sent),
            (K::Sending, K::Delivered),
            (K::Sending, K::Deferred),
            (K::Sending, K::Unknown),
            (K::Sending, K::Failed),
            (K::Unknown, K::Deferred),
            (K::Unknown, K::Failed),
            (K::Unknown, K::Delivered),
            (K::Deferred, K::Rendered),
            // A collapse group's window ended: the survivor renders with what it merged.
            (K::Deferred, K::Filtered),
            (K::Deferred, K::Sending),
            (K::Deferred, K::Cancelled),
            (K::Deferred, K::Delivered),
            (K::Sent, K::Delivered),
            (K::Sent, K::Failed),
            (K::Failed, K::DeadLettered),
            // Channel fallback: the next channel starts at its filter.
            (K::Failed, K::Filtered),
            // Provider failover inside the channel: the next provider of the route.
            (K::Sending, K::Sending),
            // An operator's replay from the dead-letter queue: the lifecycle starts over.
            (K::DeadLettered, K::Received),
            // A late delivery receipt: it arrived after all, and leaves the dead-letter queue.
            (K::DeadLettered, K::Delivered),
            // Quiet hours: the filter defers, and runs again when they end.
            (K::Received, K::Deferred),
            (K::Deferred, K::Received),
            // The re-check after a claim: an opt-out, an unsubscribe or a removed address since
            // the filter stops the send before the provider is called.
            (K::Sending, K::Skipped),
            // An operator's retry: the wait ends now.
            (K::Deferred, K::Deferred),
        ]
    };

    /// Whether the lifecycle may move from `self` to `to`.
    pub fn may_move_to(self, to: StateKind) -> bool {
        StateKind::EDGES.contains(&(self, to))
    }
}

impl std::fmt::Display for StateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl State {
    /// The state's kind.
    pub fn kind(&self) -> StateKind {
        match self {
            State::Received {} => StateKind::Received,
            State::Filtered { .. } => StateKind::Filtered,
            State::Rendered { .. } => StateKind::Rendered,
            State::RateChecked { .. } => StateKind::RateChecked,
            State::Sending { .. } => StateKind::Sending,
            State::Unknown { .. } => StateKind::Unknown,
            State::Deferred { .. } => StateKind::Deferred,
            State::Sent { .. } => StateKind::Sent,
            State::Failed { .. } => StateKind::Failed,
            State::Delivered { .. } => StateKind::Delivered,
            State::DeadLettered { .. } => StateKind::DeadLettered,
            State::Skipped { .. } => StateKind::Skipped,
            State::Cancelled {} => StateKind::Cancelled,
        }
    }

    /// Whether the state is terminal.
    pub fn is_terminal(&self) -> bool {
        self.kind().is_terminal()
    }

    /// The channel the state is about, when it has one.
    pub fn channel(&self) -> Option<Channel> {
        match self {
            State::Filtered { channel }
            | State::Rendered { channel }
            | State::RateChecked { channel }
            | State::Sending { channel, .. }
            | State::Unknown { channel, .. }
            | State::Sent { channel, .. }
            | State::Failed { channel, .. }
            | State::Delivered { channel, .. }
            | State::DeadLettered { channel, .. } => Some(*channel),
            State::Deferred { resume: Resume::Collapse { channel }, .. }
            | State::Deferred { resume: Resume::RateCheck { channel }, .. }
            | State::Deferred { resume: Resume::Filter { channel }, .. }
            | State::Deferred { resume: Resume::Send { channel, .. }, .. }
            | State::Deferred { resume: Resume::SendSlot { channel, .. }, .. } => Some(*channel),
            State::Received {} | State::Skipped { .. } | State::Cancelled {} => None,
        }
    }

    /// The provider the state is about, when it has one.
    pub fn provider(&self) -> Option<&ProviderName> {
        match self {
            State::Sending { provider, .. }
            | State::Unknown { provider, .. }
            | State::Sent { provider, .. }
            | State::Delivered { provider, .. }
            | State::Deferred { resume: Resume::Send { provider, .. }, .. }
            | State::Deferred { resume: Resume::SendSlot { provider, .. }, .. } => Some(provider),
            State::Failed { provider, .. } | State::DeadLettered { provider, .. } => {
                provider.as_ref()
            }
            _ => None,
        }
    }

    /// The attempt the state is about, when it has one.
    pub fn attempt(&self) -> Option<Attempt> {
        match self {
            State::Sending { attempt, .. }
            | State::Unknown { attempt, .. }
            | State::Sent { attempt, .. }
            | State::Failed { attempt, .. }
            | State::Delivered { attempt, .. }
            | State::DeadLettered { attempt, .. }
            | State::Deferred { resume: Resume::Send { attempt, .. }, .. }
            | State::Deferred { resume: Resume::SendSlot { attempt, .. }, .. } => Some(*attempt),
            _ => None,
        }
    }
}

/// A machine restored from a persisted state, ready to handle events.
pub type Machine = InitializedStateMachine<Lifecycle>;

/// Restores a machine into `state` without acting on it: statig runs the entry actions on init,
/// and the effects they push are discarded here, so a restored `sending` does not send again.
pub fn restore(state: State, policy: &Policy, channel: Channel) -> Machine {
    let mut uninit = Lifecycle.uninitialized_state_machine();
    *uninit.state_mut() = state;
    let mut throwaway = Context::new(policy, channel, 0, 0, 0);
    uninit.init_with_context(&mut throwaway)
}
