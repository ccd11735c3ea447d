//! The preference filter: may this notification go out on this channel, now?
//!
//! Three questions, in order, each answered from the notification and what the recipients
//! directory holds about its recipient (read by the runner just before, see
//! `workflows::runner`):
//! 1. **Preferences** (`crate::preferences::evaluate`): critical categories, global unsubscribe,
//!    the recipient's choices, the policy's per-category defaults. A refusal skips.
//! 2. **An address** for the channel: given with the notification (it wins), else from the stored
//!    profile (email, phone, push devices); in-app needs only the recipient id. None skips with
//!    [`SkipReason::NoAddress`].
//! 3. **Quiet hours** (`crate::quiet`), for non-critical categories with a time zone stored: inside
//!    the window, the notification is deferred to the window's end (the lifecycle skips it instead
//!    when that end falls after its time budget).
//!
//! The decision names the rule that made it; the lifecycle records it in the history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Category, Channel, Recipient, Request};
use crate::preferences::{self, Preferences, Rule};
use crate::quiet::{self, QuietHours};
use crate::recipient::{Device, RecipientEntry};

/// Why a notification was skipped without being sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SkipReason {
    /// The recipient opted out of the channel (their stored choice, or the notification's own
    /// `opt_out` list).
    OptedOut {
        /// The channel that was opted out of.
        channel: Channel,
    },
    /// The recipient has no address for the channel.
    NoAddress {
        /// The channel that lacks an address.
        channel: Channel,
    },
    /// The rate limit policy says skip rather than defer.
    RateLimited {
        /// The channel whose limit was hit.
        channel: Channel,
    },
    /// By the time it could go out, the message is no longer worth sending (its channel's time
    /// budget would be over).
    Expired {
        /// The channel.
        channel: Channel,
    },
    /// Merged into another notification's message by its collapse key (that one carries this
    /// one's data).
    Collapsed {
        /// The notification whose message carries it.
        into: crate::model::NotificationId,
    },
    /// A cap of the category was reached and its policy says skip rather than defer.
    Capped {
        /// The category.
        category: Category,
        /// The cap's max.
        max: u32,
        /// The cap's window, ms.
        window_ms: u64,
    },
    /// The recipient unsubscribed from everything but critical messages.
    Unsubscribed {
        /// The channel it was for.
        channel: Channel,
    },
    /// The recipient switched the category off, everywhere or on this channel.
    CategoryOptedOut {
        /// The category.
        category: Category,
        /// The channel.
        channel: Channel,
        /// Whether they switched it off on every channel (else on this one).
        everywhere: bool,
    },
    /// The policy makes the category opt-in on the channel and the recipient has not opted in.
    NotOptedIn {
        /// The category.
        category: Category,
        /// The channel.
        channel: Channel,
    },
    /// The recipient's quiet hours last past the message's time budget.
    QuietHours {
        /// The channel.
        channel: Channel,
        /// When the quiet hours end, ms since the Unix epoch.
        until_ms: u64,
    },
}

impl SkipReason {
    /// Whether the recipient's preferences or quiet hours made the skip (not an address, a rate
    /// limit or the time budget alone). Never true for a critical category.
    pub fn is_preference(&self) -> bool {
        matches!(
            self,
            SkipReason::OptedOut { .. }
                | SkipReason::Unsubscribed { .. }
                | SkipReason::CategoryOptedOut { .. }
                | SkipReason::NotOptedIn { .. }
                | SkipReason::QuietHours { .. }
        )
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::OptedOut { channel } => write!(f, "recipient opted out of {channel}"),
            SkipReason::NoAddress { channel } => write!(f, "recipient has no {channel} address"),
            SkipReason::RateLimited { channel } => write!(f, "{channel} rate limit reached"),
            SkipReason::Expired { channel } => {
                write!(f, "the {channel} message would go out after its time budget")
            }
            SkipReason::Collapsed { into } => write!(f, "collapsed into notification {into}"),
            SkipReason::Capped { category, max, window_ms } => write!(
                f,
                "the {category} cap ({max} per {}) was reached",
                crate::limits::human_ms(*window_ms)
            ),
            SkipReason::Unsubscribed { .. } => {
                write!(f, "recipient unsubscribed from everything but critical messages")
            }
            SkipReason::CategoryOptedOut { category, everywhere: true, .. } => {
                write!(f, "recipient switched {category} off")
            }
            SkipReason::CategoryOptedOut { category, channel, everywhere: false } => {
                write!(f, "recipient switched {category} off on {channel}")
            }
            SkipReason::NotOptedIn { category, channel } => write!(
                f,
                "{category} on {channel} needs the recipient's opt-in, and they have not opted in"
            ),
            SkipReason::QuietHours { channel, until_ms } => write!(
                f,
                "the recipient's quiet hours last until {}, after the {channel} message's time \
                 budget",
                quiet::utc(*until_ms)
            ),
        }
    }
}

/// The filter's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum FilterDecision {
    /// Go ahead on the channel; `rule` names what allowed it (recorded in the history).
    Allow {
        /// The channel allowed.
        channel: Channel,
        /// The rule that allowed it.
        rule: String,
    },
    /// Do not send.
    Skip(SkipReason),
    /// Allowed, but not now: the recipient's quiet hours last until `until_ms`.
    Defer {
        /// The channel.
        channel: Channel,
        /// When the quiet hours end, ms since the Unix epoch (always after the decision's time).
        until_ms: u64,
        /// The rule (preferences, quiet-hours window, local times), for the history.
        rule: String,
    },
}

/// What the policy says about the notification's category, for the filter.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Whether the category is critical (no preference or quiet hours applies).
    pub critical: bool,
    /// Per channel, whether the category goes out to a recipient who made no choice (a channel
    /// not listed: it does). `false` makes the category opt-in on that channel.
    pub defaults: &'a BTreeMap<Channel, bool>,
    /// The quiet hours of recipients who chose none.
    pub quiet_hours: Option<&'a QuietHours>,
}

impl Rules<'static> {
    /// No critical category, no opt-in channel, no default quiet hours.
    pub fn none() -> Self {
        static NONE: BTreeMap<Channel, bool> = BTreeMap::new();
        Self { critical: false, defaults: &NONE, quiet_hours: None }
    }
}

fn skip_reason(decision: &preferences::Decision) -> SkipReason {
    let (category, channel) = (decision.category.clone(), decision.channel);
    match decision.rule {
        Rule::Unsubscribed => SkipReason::Unsubscribed { channel },
        Rule::CategoryOnChannel(_) => {
            SkipReason::CategoryOptedOut { category, channel, everywhere: false }
        }
        Rule::CategoryOff => SkipReason::CategoryOptedOut { category, channel, everywhere: true },
        Rule::NotOptedIn => SkipReason::NotOptedIn { category, channel },
        Rule::ChannelOff { .. } | Rule::Critical | Rule::Default { .. } => {
            SkipReason::OptedOut { channel }
        }
    }
}

/// The recipient's addresses for the provider call: each one given with the notification wins,
/// the stored profile's fills in the rest.
pub fn addressed(recipient: &Recipient, stored: Option<&RecipientEntry>) -> Recipient {
    let contact = stored.and_then(RecipientEntry::contact);
    Recipient {
        id: recipient.id.clone(),
        email: recipient.email.clone().or_else(|| contact.and_then(|c| c.email.clone())),
        phone: recipient.phone.clone().or_else(|| contact.and_then(|c| c.phone.clone())),
        opt_out: recipient.opt_out.clone(),
    }
}

/// The push devices to send to: the stored profile's, as they are now.
pub fn devices(stored: Option<&RecipientEntry>) -> Vec<Device> {
    stored.map(|e| e.devices().to_vec()).unwrap_or_default()
}

/// Where the channel's address comes from, or `None` when there is none.
fn address(request: &Request, channel: Channel, stored: Option<&RecipientEntry>) -> Option<String> {
    let inline = &request.recipient;
    let contact = stored.and_then(RecipientEntry::contact);
    let from = |given: bool, kept: bool, what: &str| match (given, kept) {
        (true, _) => Some(format!("{what} given with the notification")),
        (false, true) => Some(format!("{what} from the stored profile")),
        (false, false) => None,
    };
    match channel {
        Channel::Email => from(
            inline.email.is_some(),
            contact.is_some_and(|c| c.email.is_some()),
            "email address",
        ),
        Channel::Sms => {
            from(inline.phone.is_some(), contact.is_some_and(|c| c.phone.is_some()), "phone number")
        }
        Channel::Push => {
            let n = stored.map_or(0, |e| e.devices().len());
            (n > 0).then(|| format!("{n} push device(s) in the stored profile"))
        }
        Channel::InApp => Some("the recipient's in-app inbox".to_owned()),
        // Chat targets arrive with the chat providers; until then the provider answers for them.
        Channel::Chat => Some("chat needs no stored address".to_owned()),
    }
}

/// Decides whether `request` may go out on `channel` at `now_ms`, given what the directory holds
/// about its recipient (`stored`, `None` when nothing is stored) and the category's `rules`.
pub fn decide(
    request: &Request,
    channel: Channel,
    rules: &Rules<'_>,
    stored: Option<&RecipientEntry>,
    now_ms: u64,
) -> FilterDecision {
    let nothing = Preferences::default();
    let preferences = stored.map_or(&nothing, |e| &e.preferences);
    let default_on = rules.defaults.get(&channel).copied().unwrap_or(true);
    let inline_opt_out = request.recipient.opt_out.contains(&channel);
    let decision = preferences::evaluate(
        preferences,
        &request.category,
        channel,
        rules.critical,
        default_on,
        inline_opt_out,
    );
    if !decision.allowed {
        return FilterDecision::Skip(skip_reason(&decision));
    }
    let Some(address) = address(request, channel, stored) else {
        return FilterDecision::Skip(SkipReason::NoAddress { channel });
    };
    let mut rule = format!("{decision}; {address}");
    if rules.critical {
        return FilterDecision::Allow { channel, rule };
    }
    let window = preferences.quiet_hours(rules.quiet_hours);
    match (window, stored.and_then(RecipientEntry::time_zone)) {
        (None, _) => {}
        (Some(window), None) => {
            rule.push_str(&format!("; quiet hours {window} not applied: no time zone is stored"));
        }
        (Some(window), Some(zone)) => match quiet::window_end(window, zone, now_ms) {
            Some(until_ms) => {
                rule.push_str(&format!(
                    "; quiet hours {window} in {zone} (it is {} there): deferred to {} local, \
                     {}",
                    quiet::local_hm(now_ms, zone),
                    quiet::local_hm(until_ms, zone),
                    quiet::utc(until_ms)
                ));
                return FilterDecision::Defer { channel, until_ms, rule };
            }
            None => rule.push_str(&format!(
                "; outside quiet hours {window} in {zone} (it is {} there)",
                quiet::local_hm(now_ms, zone)
            )),
        },
    }
    FilterDecision::Allow { channel, rule }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::preferences::{CategoryChoice, QuietHoursChoice};
    use crate::quiet::LocalTime;
    use crate::recipient::{Contact, DeviceToken, Platform, Profile, TimeZone};

    /// 2026-01-10T23:30:00Z, a Saturday night in Paris (00:30 local on the 11th).
    const NIGHT_MS: u64 = 1_768_087_800_000;

    fn request(channel: Channel, opt_out: Vec<Channel>, email: bool) -> Request {
        Request {
            recipient: Recipient {
                id: RecipientId::new("u1").unwrap(),
                email: email.then(|| EmailAddress::parse("ada@example.com").unwrap()),
                phone: None,
                opt_out,
            },
            channel,
            template: TemplateRef { id: TemplateId::new("welcome").unwrap(), version: "v".into() },
            data: Default::default(),
            category: Category::new("account").unwrap(),
            locale: None,
            correlation: Default::default(),
        }
    }

    fn entry(profile: Option<Profile>, preferences: Preferences) -> RecipientEntry {
        RecipientEntry {
            id: RecipientId::new("u1").unwrap(),
            profile,
            preferences,
            revision: 3,
            updated_at_ms: 1,
        }
    }

    fn paris_profile(email: bool) -> Profile {
        Profile {
            contact: Contact {
                email: email.then(|| EmailAddress::parse("stored@example.com").unwrap()),
                phone: Some(PhoneNumber::parse("+33612345678").unwrap()),
                locale: None,
                time_zone: Some(TimeZone::parse("Europe/Paris").unwrap()),
            },
            devices: vec![],
        }
    }

    fn night() -> QuietHours {
        QuietHours::new(LocalTime::parse("22:00").unwrap(), LocalTime::parse("07:00").unwrap())
            .unwrap()
    }

    fn decide_now(
        r: &Request,
        channel: Channel,
        stored: Option<&RecipientEntry>,
    ) -> FilterDecision {
        decide(r, channel, &Rules::none(), stored, NIGHT_MS)
    }

    #[test]
    fn opt_out_skips_only_that_channel() {
        let r = request(Channel::Email, vec![Channel::Email], true);
        assert_eq!(
            decide_now(&r, Channel::Email, None),
            FilterDecision::Skip(SkipReason::OptedOut { channel: Channel::Email })
        );
        assert!(matches!(decide_now(&r, Channel::InApp, None), FilterDecision::Allow { .. }));
    }

    #[test]
    fn missing_address_skips() {
        let r = request(Channel::Email, vec![], false);
        for channel in [Channel::Email, Channel::Sms, Channel::Push] {
            assert_eq!(
                decide_now(&r, channel, None),
                FilterDecision::Skip(SkipReason::NoAddress { channel })
            );
        }
    }

    #[test]
    fn addresses_come_inline_first_then_from_the_profile() {
        let stored = entry(Some(paris_profile(true)), Preferences::default());
        // No inline address: the profile's serves, and the rule says so.
        let r = request(Channel::Email, vec![], false);
        let FilterDecision::Allow { rule, .. } = decide_now(&r, Channel::Email, Some(&stored))
        else {
            panic!("allowed");
        };
        assert!(rule.contains("email address from the stored profile"), "{rule}");
        let resolved = addressed(&r.recipient, Some(&stored));
        assert_eq!(resolved.email.unwrap().expose(), "stored@example.com");
        assert_eq!(resolved.phone.unwrap().expose(), "+33612345678");
        // An inline address wins over the stored one.
        let r = request(Channel::Email, vec![], true);
        let FilterDecision::Allow { rule, .. } = decide_now(&r, Channel::Email, Some(&stored))
        else {
            panic!("allowed");
        };
        assert!(rule.contains("given with the notification"), "{rule}");
        assert_eq!(
            addressed(&r.recipient, Some(&stored)).email.unwrap().expose(),
            "ada@example.com"
        );
        // Push needs a stored device.
        let mut with_device = paris_profile(true);
        let token = DeviceToken::parse("tok-1").unwrap();
        with_device.devices.push(Device::new(Platform::Android, token, 1));
        let stored = entry(Some(with_device), Preferences::default());
        assert!(matches!(
            decide_now(&r, Channel::Push, Some(&stored)),
            FilterDecision::Allow { .. }
        ));
        assert_eq!(devices(Some(&stored)).len(), 1);
    }

    #[test]
    fn stored_preferences_skip_with_their_rule() {
        let r = request(Channel::Email, vec![], true);
        let unsubscribed = Preferences { unsubscribed: true, ..Preferences::default() };
        assert_eq!(
            decide_now(&r, Channel::Email, Some(&entry(None, unsubscribed))),
            FilterDecision::Skip(SkipReason::Unsubscribed { channel: Channel::Email })
        );
        let mut off = Preferences::default();
        off.categories.insert(
            Category::new("account").unwrap(),
            CategoryChoice { enabled: Some(false), ..CategoryChoice::default() },
        );
        let skipped = decide_now(&r, Channel::Email, Some(&entry(None, off)));
        let FilterDecision::Skip(reason) = skipped else { panic!("skipped") };
        assert_eq!(reason.to_string(), "recipient switched account off");
        assert!(reason.is_preference());
        // The policy's opt-in default.
        let defaults = BTreeMap::from([(Channel::Email, false)]);
        let rules = Rules { critical: false, defaults: &defaults, quiet_hours: None };
        assert!(matches!(
            decide(&r, Channel::Email, &rules, None, NIGHT_MS),
            FilterDecision::Skip(SkipReason::NotOptedIn { .. })
        ));
        // A critical category passes all of it, and the address is still needed.
        let critical = Rules { critical: true, ..rules };
        let stored = entry(None, Preferences { unsubscribed: true, ..Preferences::default() });
        assert!(matches!(
            decide(&r, Channel::Email, &critical, Some(&stored), NIGHT_MS),
            FilterDecision::Allow { .. }
        ));
        assert_eq!(
            decide(
                &request(Channel::Email, vec![], false),
                Channel::Email,
                &critical,
                None,
                NIGHT_MS
            ),
            FilterDecision::Skip(SkipReason::NoAddress { channel: Channel::Email })
        );
    }

    #[test]
    fn quiet_hours_defer_non_critical_messages_to_the_windows_end() {
        let r = request(Channel::Email, vec![], true);
        let prefs = Preferences {
            quiet_hours: Some(QuietHoursChoice::Window(night())),
            ..Preferences::default()
        };
        let stored = entry(Some(paris_profile(true)), prefs.clone());
        let decision = decide_now(&r, Channel::Email, Some(&stored));
        let FilterDecision::Defer { until_ms, rule, .. } = decision else {
            panic!("deferred: {decision:?}")
        };
        // 07:00 Paris on the 11th is 06:00Z.
        assert_eq!(until_ms, 1_768_111_200_000);
        assert!(
            rule.contains("quiet hours 22:00–07:00 in Europe/Paris (it is 00:30 there)"),
            "{rule}"
        );
        assert!(rule.contains("deferred to 07:00 local, 2026-01-11T06:00:00Z"), "{rule}");
        // Critical categories pass.
        let mut defaults = BTreeMap::new();
        defaults.insert(Channel::Email, true);
        let critical = Rules { critical: true, defaults: &defaults, quiet_hours: None };
        assert!(matches!(
            decide(&r, Channel::Email, &critical, Some(&stored), NIGHT_MS),
            FilterDecision::Allow { .. }
        ));
        // Outside the window, allowed, and the rule says it looked.
        let noon = NIGHT_MS + 12 * 3_600_000;
        let FilterDecision::Allow { rule, .. } =
            decide(&r, Channel::Email, &Rules::none(), Some(&stored), noon)
        else {
            panic!("allowed at noon")
        };
        assert!(rule.contains("outside quiet hours"), "{rule}");
        // Without a time zone, quiet hours cannot apply, and the rule says so.
        let no_zone = entry(None, prefs);
        let FilterDecision::Allow { rule, .. } = decide_now(&r, Channel::Email, Some(&no_zone))
        else {
            panic!("allowed without a zone")
        };
        assert!(rule.contains("no time zone is stored"), "{rule}");
    }

    #[test]
    fn the_policys_default_window_applies_unless_the_recipient_turned_it_off() {
        let r = request(Channel::Email, vec![], true);
        let window = night();
        let rules = Rules { quiet_hours: Some(&window), ..Rules::none() };
        let stored = entry(Some(paris_profile(true)), Preferences::default());
        assert!(matches!(
            decide(&r, Channel::Email, &rules, Some(&stored), NIGHT_MS),
            FilterDecision::Defer { .. }
        ));
        let off =
            Preferences { quiet_hours: Some(QuietHoursChoice::Off), ..Preferences::default() };
        let stored = entry(Some(paris_profile(true)), off);
        assert!(matches!(
            decide(&r, Channel::Email, &rules, Some(&stored), NIGHT_MS),
            FilterDecision::Allow { .. }
        ));
    }
}
