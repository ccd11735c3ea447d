//! A recipient's preferences and the pure rule that decides whether a notification of a category
//! may go out on a channel.
//!
//! The rule, in the order it is applied (the first that speaks decides):
//! 1. A **critical** category (the policy's `critical`, `otp` and `security` by default) always
//!    goes out: users cannot switch off a one-time code or a security alert.
//! 2. A **global unsubscribe** blocks everything else.
//! 3. The recipient's choice for the **category on this channel** (`marketing` on `sms`), the most
//!    specific choice, decides either way.
//! 4. The recipient's choice for the **category** (everywhere) and for the **channel** (every
//!    category), equally specific: if either is an opt-out, the notification does not go out. An
//!    opt-out is never outvoted by an opt-in of the same rank.
//! 5. The **policy's default** for the category on the channel: a channel the policy marks
//!    opt-in (`marketing` on `sms` by default) needs the recipient's choice for that category on
//!    that channel (rule 3); consent to marketing texts is specific, so neither "marketing: on"
//!    nor "sms: on" gives it.
//! 6. Otherwise it goes out.
//!
//! The notification's own `opt_out` list (channels the application says the recipient opted out
//! of) counts as a channel opt-out at rule 4.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::model::{Category, Channel};
use crate::quiet::QuietHours;

/// The most categories one recipient may hold choices for. Applications have tens of categories;
/// the bound keeps an entry (read on every notification) small.
pub const CATEGORIES_MAX: usize = 100;

/// A recipient's choices. The empty value (nothing chosen) leaves every default in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Global unsubscribe: nothing but critical categories.
    #[serde(default)]
    pub unsubscribed: bool,
    /// Per-channel choices, for every category: `true` opts in, `false` out.
    #[serde(default)]
    pub channels: BTreeMap<Channel, bool>,
    /// Per-category choices.
    #[serde(default)]
    pub categories: BTreeMap<Category, CategoryChoice>,
    /// Quiet hours: absent follows the policy's default window (if any), `false` turns quiet
    /// hours off, a window sets the recipient's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHoursChoice>,
}

/// A recipient's choices for one category.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryChoice {
    /// The category everywhere: `false` switches it off on every channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The category on one channel, the most specific choice.
    #[serde(default)]
    pub channels: BTreeMap<Channel, bool>,
}

/// What a recipient chose about quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuietHoursChoice {
    /// No quiet hours, whatever the policy's default (`false` on the wire).
    Off,
    /// This window, in the recipient's time zone.
    Window(QuietHours),
}

impl Serialize for QuietHoursChoice {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            QuietHoursChoice::Off => serializer.serialize_bool(false),
            QuietHoursChoice::Window(window) => window.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for QuietHoursChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChoiceVisitor;

        impl<'de> Visitor<'de> for ChoiceVisitor {
            type Value = QuietHoursChoice;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a window {\"start\": \"HH:MM\", \"end\": \"HH:MM\"}, or false for none",
                )
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<QuietHoursChoice, E> {
                if v {
                    Err(E::custom(
                        "true is not a window: give {\"start\": \"HH:MM\", \"end\": \"HH:MM\"}, or \
                         false for no quiet hours",
                    ))
                } else {
                    Ok(QuietHoursChoice::Off)
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<QuietHoursChoice, A::Error> {
                let window = QuietHours::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(QuietHoursChoice::Window(window))
            }
        }

        deserializer.deserialize_any(ChoiceVisitor)
    }
}

/// Why preferences were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Choices for too many categories.
    #[error("at most {CATEGORIES_MAX} categories")]
    TooManyCategories,
}

impl Preferences {
    /// What a provider's unsubscribe (a list-unsubscribe link, SendGrid's `unsubscribe`) means:
    /// `category` off on `channel`, the most specific choice, so other categories and channels
    /// are untouched. When the recipient already has choices for [`CATEGORIES_MAX`] other
    /// categories, a global unsubscribe instead: an unsubscribe is never dropped. Returns whether
    /// anything changed (a repeated receipt changes nothing).
    pub fn unsubscribe_from(&mut self, category: &Category, channel: Channel) -> bool {
        if !self.categories.contains_key(category) && self.categories.len() >= CATEGORIES_MAX {
            return self.unsubscribe_all();
        }
        let choice = self.categories.entry(category.clone()).or_default();
        choice.channels.insert(channel, false) != Some(false)
    }

    /// What a spam report (a complaint) means: a global unsubscribe, which leaves only critical
    /// categories. Returns whether anything changed.
    pub fn unsubscribe_all(&mut self) -> bool {
        !std::mem::replace(&mut self.unsubscribed, true)
    }

    /// Checks the limits (the syntax is checked when deserialized).
    pub fn validate(&self) -> Result<(), Error> {
        if self.categories.len() > CATEGORIES_MAX {
            return Err(Error::TooManyCategories);
        }
        Ok(())
    }

    /// The quiet-hours window in force: the recipient's own, none if they turned quiet hours
    /// off, else the policy's default.
    pub fn quiet_hours<'a>(
        &'a self,
        policy_default: Option<&'a QuietHours>,
    ) -> Option<&'a QuietHours> {
        match &self.quiet_hours {
            Some(QuietHoursChoice::Window(window)) => Some(window),
            Some(QuietHoursChoice::Off) => None,
            None => policy_default,
        }
    }
}

/// The rule that decided ([`evaluate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The category is critical.
    Critical,
    /// The recipient unsubscribed from everything.
    Unsubscribed,
    /// The recipient's choice for the category on the channel.
    CategoryOnChannel(bool),
    /// The recipient switched the category off.
    CategoryOff,
    /// The recipient opted out of the channel (`inline`: the notification's own `opt_out` says
    /// so).
    ChannelOff {
        /// Whether the opt-out came with the notification rather than from the stored choices.
        inline: bool,
    },
    /// The policy makes the category opt-in on the channel, and the recipient did not opt in.
    NotOptedIn,
    /// Nothing forbids it.
    Default {
        /// The recipient opted in to the category (everywhere).
        category_on: bool,
        /// The recipient opted in to the channel (every category).
        channel_on: bool,
    },
}

/// The preference decision for one category on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the notification may go out.
    pub allowed: bool,
    /// The rule that decided.
    pub rule: Rule,
    /// The category.
    pub category: Category,
    /// The channel.
    pub channel: Channel,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (category, channel) = (&self.category, self.channel);
        match self.rule {
            Rule::Critical => write!(
                f,
                "{category} is a critical category: preferences and quiet hours do not apply"
            ),
            Rule::Unsubscribed => {
                write!(f, "the recipient unsubscribed from everything but critical messages")
            }
            Rule::CategoryOnChannel(true) => {
                write!(f, "the recipient opted in to {category} on {channel}")
            }
            Rule::CategoryOnChannel(false) => {
                write!(f, "the recipient switched {category} off on {channel}")
            }
            Rule::CategoryOff => write!(f, "the recipient switched {category} off"),
            Rule::ChannelOff { inline: false } => {
                write!(f, "the recipient opted out of {channel}")
            }
            Rule::ChannelOff { inline: true } => {
                write!(f, "the notification says the recipient opted out of {channel}")
            }
            Rule::NotOptedIn => write!(
                f,
                "{category} on {channel} is opt-in by policy and the recipient has not opted in"
            ),
            Rule::Default { category_on, channel_on } => {
                write!(f, "no choice of the recipient forbids {category} on {channel}")?;
                match (category_on, channel_on) {
                    (true, true) => write!(f, " (opted in to {category} and to {channel})"),
                    (true, false) => write!(f, " (opted in to {category})"),
                    (false, true) => write!(f, " (opted in to {channel})"),
                    (false, false) => Ok(()),
                }
            }
        }
    }
}

/// Decides whether a notification of `category` may go out on `channel` (see the module doc for
/// the rule). `critical` and `default_on` come from the policy: whether the category is critical,
/// and whether it goes out on the channel to a recipient who made no choice. `inline_opt_out`
/// says whether the notification itself lists the channel as opted out.
pub fn evaluate(
    preferences: &Preferences,
    category: &Category,
    channel: Channel,
    critical: bool,
    default_on: bool,
    inline_opt_out: bool,
) -> Decision {
    let decide = |allowed, rule| Decision { allowed, rule, category: category.clone(), channel };
    if critical {
        return decide(true, Rule::Critical);
    }
    if preferences.unsubscribed {
        return decide(false, Rule::Unsubscribed);
    }
    let choice = preferences.categories.get(category);
    if let Some(&on) = choice.and_then(|c| c.channels.get(&channel)) {
        return decide(on, Rule::CategoryOnChannel(on));
    }
    let category_on = choice.and_then(|c| c.enabled);
    if category_on == Some(false) {
        return decide(false, Rule::CategoryOff);
    }
    if inline_opt_out {
        return decide(false, Rule::ChannelOff { inline: true });
    }
    let channel_on = preferences.channels.get(&channel).copied();
    if channel_on == Some(false) {
        return decide(false, Rule::ChannelOff { inline: false });
    }
    if !default_on {
        return decide(false, Rule::NotOptedIn);
    }
    decide(
        true,
        Rule::Default {
            category_on: category_on == Some(true),
            channel_on: channel_on == Some(true),
        },
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn category(s: &str) -> Category {
        Category::new(s).unwrap()
    }

    fn prefs(json: serde_json::Value) -> Preferences {
        serde_json::from_value(json).unwrap()
    }

    /// `evaluate` for marketing, not critical, sent by default unless `default_on` says no.
    fn check(p: &Preferences, channel: Channel, default_on: bool) -> (bool, Rule) {
        let d = evaluate(p, &category("marketing"), channel, false, default_on, false);
        (d.allowed, d.rule)
    }

    #[test]
    fn a_receipt_unsubscribe_turns_off_the_category_on_its_channel_only() {
        let mut p = prefs(serde_json::json!({"categories": {"marketing": {"enabled": true}}}));
        assert!(p.unsubscribe_from(&category("marketing"), Channel::Email));
        assert!(!p.unsubscribe_from(&category("marketing"), Channel::Email), "a repeat is a no-op");
        assert!(!check(&p, Channel::Email, true).0);
        assert!(check(&p, Channel::Sms, true).0, "SMS is untouched");
        let other = evaluate(&p, &category("alerts"), Channel::Email, false, true, false);
        assert!(other.allowed, "other categories are untouched");
        assert!(p.validate().is_ok());
    }

    #[test]
    fn a_receipt_unsubscribe_with_every_category_slot_taken_unsubscribes_globally() {
        let mut p = Preferences::default();
        for i in 0..CATEGORIES_MAX {
            p.categories.insert(category(&format!("c{i}")), CategoryChoice::default());
        }
        assert!(p.unsubscribe_from(&category("marketing"), Channel::Email));
        assert!(p.unsubscribed);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn a_spam_report_unsubscribes_from_everything_but_critical_categories() {
        let mut p = Preferences::default();
        assert!(p.unsubscribe_all());
        assert!(!p.unsubscribe_all());
        assert!(!check(&p, Channel::Sms, true).0);
        let otp = evaluate(&p, &category("otp"), Channel::Sms, true, true, false);
        assert!(otp.allowed);
    }

    #[test]
    fn nothing_chosen_follows_the_policy_default() {
        let none = Preferences::default();
        let allowed = Rule::Default { category_on: false, channel_on: false };
        assert_eq!(check(&none, Channel::Email, true), (true, allowed));
        assert_eq!(check(&none, Channel::Sms, false), (false, Rule::NotOptedIn));
    }

    #[test]
    fn a_critical_category_passes_everything() {
        let p = prefs(serde_json::json!({
            "unsubscribed": true,
            "channels": {"sms": false},
            "categories": {"otp": {"enabled": false, "channels": {"sms": false}}}
        }));
        let d = evaluate(&p, &category("otp"), Channel::Sms, true, false, true);
        assert!(d.allowed);
        assert_eq!(d.rule, Rule::Critical);
        assert!(d.to_string().contains("critical"), "{d}");
    }

    #[test]
    fn global_unsubscribe_beats_every_opt_in() {
        let p = prefs(serde_json::json!({
            "unsubscribed": true,
            "channels": {"email": true},
            "categories": {"marketing": {"enabled": true, "channels": {"email": true}}}
        }));
        assert_eq!(check(&p, Channel::Email, true), (false, Rule::Unsubscribed));
    }

    #[test]
    fn the_most_specific_choice_wins() {
        // Marketing off everywhere, but on for email: email goes, push does not.
        let p = prefs(serde_json::json!({
            "categories": {"marketing": {"enabled": false, "channels": {"email": true}}}
        }));
        assert_eq!(check(&p, Channel::Email, true), (true, Rule::CategoryOnChannel(true)));
        assert_eq!(check(&p, Channel::Push, true), (false, Rule::CategoryOff));
        // SMS off for everything, but marketing SMS explicitly on: the specific choice wins.
        let p = prefs(serde_json::json!({
            "channels": {"sms": false},
            "categories": {"marketing": {"channels": {"sms": true}}}
        }));
        assert_eq!(check(&p, Channel::Sms, false), (true, Rule::CategoryOnChannel(true)));
        // And the other way round: email on, marketing email off.
        let p = prefs(serde_json::json!({
            "channels": {"email": true},
            "categories": {"marketing": {"channels": {"email": false}}}
        }));
        assert_eq!(check(&p, Channel::Email, true), (false, Rule::CategoryOnChannel(false)));
    }

    #[test]
    fn between_category_and_channel_an_opt_out_wins() {
        let p = prefs(serde_json::json!({
            "channels": {"push": false},
            "categories": {"marketing": {"enabled": true}}
        }));
        assert_eq!(check(&p, Channel::Push, true), (false, Rule::ChannelOff { inline: false }));
        let p = prefs(serde_json::json!({
            "channels": {"push": true},
            "categories": {"marketing": {"enabled": false}}
        }));
        assert_eq!(check(&p, Channel::Push, true), (false, Rule::CategoryOff));
    }

    #[test]
    fn an_opt_in_channel_needs_the_specific_opt_in() {
        let broad = prefs(serde_json::json!({
            "channels": {"sms": true},
            "categories": {"marketing": {"enabled": true}}
        }));
        assert_eq!(check(&broad, Channel::Sms, false), (false, Rule::NotOptedIn));
        let specific =
            prefs(serde_json::json!({"categories": {"marketing": {"channels": {"sms": true}}}}));
        assert_eq!(check(&specific, Channel::Sms, false), (true, Rule::CategoryOnChannel(true)));
    }

    #[test]
    fn the_notifications_own_opt_out_counts_as_a_channel_opt_out() {
        let p = prefs(serde_json::json!({"channels": {"email": true}}));
        let d = evaluate(&p, &category("news"), Channel::Email, false, true, true);
        assert_eq!((d.allowed, d.rule), (false, Rule::ChannelOff { inline: true }));
        // The category-and-channel choice is more specific than either.
        let p = prefs(serde_json::json!({"categories": {"news": {"channels": {"email": true}}}}));
        let d = evaluate(&p, &category("news"), Channel::Email, false, true, true);
        assert!(d.allowed);
    }

    #[test]
    fn quiet_hours_choices_on_the_wire() {
        let off = prefs(serde_json::json!({"quiet_hours": false}));
        assert_eq!(off.quiet_hours, Some(QuietHoursChoice::Off));
        let window = prefs(serde_json::json!({"quiet_hours": {"start": "22:00", "end": "07:00"}}));
        let time = |s| crate::quiet::LocalTime::parse(s).unwrap();
        let default = Some(QuietHours::new(time("08:00"), time("09:00")).unwrap());
        assert_eq!(window.quiet_hours(default.as_ref()).unwrap().to_string(), "22:00–07:00");
        assert_eq!(off.quiet_hours(default.as_ref()), None);
        assert_eq!(Preferences::default().quiet_hours(default.as_ref()), default.as_ref());
        for bad in [
            serde_json::json!({"quiet_hours": true}),
            serde_json::json!({"quiet_hours": {"start": "22:00"}}),
            serde_json::json!({"quiet_hours": "22:00-07:00"}),
            serde_json::json!({"channels": {"fax": false}}),
            serde_json::json!({"categories": {"a:b": {}}}),
            serde_json::json!({"unsubscribe": true}),
        ] {
            assert!(serde_json::from_value::<Preferences>(bad.clone()).is_err(), "{bad}");
        }
        // Round trip, `false` included.
        for p in [off, window] {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Preferences>(&json).unwrap(), p);
        }
    }

    #[test]
    fn limits() {
        let mut p = Preferences::default();
        for i in 0..=CATEGORIES_MAX {
            p.categories.insert(category(&format!("c{i}")), CategoryChoice::default());
        }
        assert_eq!(p.validate(), Err(Error::TooManyCategories));
        p.categories.pop_first();
        assert_eq!(p.validate(), Ok(()));
    }

    fn arb_choice() -> impl Strategy<Value = Option<bool>> {
        prop_oneof![Just(None), Just(Some(true)), Just(Some(false))]
    }

    proptest! {
        /// The rule's guarantees, whatever the choices: critical always passes; otherwise an
        /// unsubscribe, or any opt-out not overridden by a more specific opt-in, blocks.
        #[test]
        fn opt_outs_are_never_missed(
            unsubscribed in any::<bool>(),
            on_channel in arb_choice(),
            category_on in arb_choice(),
            channel_on in arb_choice(),
            critical in any::<bool>(),
            default_on in any::<bool>(),
            inline in any::<bool>(),
        ) {
            let mut p = Preferences { unsubscribed, ..Preferences::default() };
            let mut choice = CategoryChoice { enabled: category_on, ..CategoryChoice::default() };
            if let Some(v) = on_channel {
                choice.channels.insert(Channel::Sms, v);
            }
            p.categories.insert(category("marketing"), choice);
            if let Some(v) = channel_on {
                p.channels.insert(Channel::Sms, v);
            }
            let d = evaluate(&p, &category("marketing"), Channel::Sms, critical, default_on, inline);
            let expected = critical
                || (!unsubscribed
                    && match on_channel {
                        Some(v) => v,
                        None => category_on != Some(false)
                            && channel_on != Some(false)
                            && !inline
                            && default_on,
                    });
            prop_assert_eq!(d.allowed, expected, "{:?}", d);
        }
    }
}
