//! The simulated recipients directory: what the workload stores about its recipients (profiles in
//! time zones around the world, push devices, preferences, quiet hours), the changes the
//! preference fault makes while notifications are in flight, and the oracle the directory
//! invariants judge every provider call and every quiet-hours deferral by.
//!
//! The oracle is written from the rule's contract (`steps::preferences`, `steps::filter`), not by
//! calling them: it says whether a notification of a category may reach a provider on a channel,
//! given what the directory held and the time, and why not.

use chrono::{DateTime, Timelike};
use steps::model::{Category, Channel, EmailAddress, PhoneNumber, RecipientId, Request};
use steps::preferences::{CategoryChoice, Preferences, QuietHoursChoice};
use steps::quiet::{LocalTime, QuietHours};
use steps::recipient::{Contact, Device, DeviceToken, Platform, RecipientEntry, TimeZone};
use workflows::policy::Policy;

use crate::rng::Rng;

/// The recipients' time zones: far apart, DST north and south, half-hour and quarter-hour
/// offsets. At the simulator's start (00:00 UTC on 1 January) it is night in some and day in
/// others.
pub const ZONES: [&str; 8] = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Los_Angeles",
    "Asia/Kathmandu",
];

/// Whether recipient `i` has a stored profile. Every eleventh does not: its notifications carry
/// their addresses inline, or have none.
pub fn has_profile(i: usize) -> bool {
    i % 11 != 10
}

fn zone(i: usize) -> TimeZone {
    TimeZone::parse(ZONES[i % ZONES.len()]).unwrap_or_else(|_| unreachable!("a known zone"))
}

fn time(h: u64, m: u64) -> LocalTime {
    LocalTime::parse(&format!("{h:02}:{m:02}")).unwrap_or_else(|_| unreachable!("a valid time"))
}

/// The phone number of recipient `i`.
pub fn phone(i: usize) -> Option<PhoneNumber> {
    PhoneNumber::parse(&format!("+1415555{:04}", i % 10_000)).ok()
}

/// The email address of recipient `i`.
pub fn email(i: usize) -> Option<EmailAddress> {
    EmailAddress::parse(&format!("r{i}@example.com")).ok()
}

/// Recipient `i`'s stored contact data.
pub fn contact(i: usize) -> Contact {
    Contact { email: email(i), phone: phone(i), locale: None, time_zone: Some(zone(i)) }
}

/// Recipient `i`'s push devices: none for every third.
pub fn devices(i: usize, now_ms: u64) -> Vec<Device> {
    let n = [0, 1, 2][i % 3];
    (0..n)
        .filter_map(|d| DeviceToken::parse(&format!("token-r{i}-{d}")).ok())
        .map(|token| {
            Device::new(
                if i.is_multiple_of(2) { Platform::Ios } else { Platform::Android },
                token,
                now_ms,
            )
        })
        .collect()
}

/// A quiet-hours window from a random hour, one to twelve hours long.
fn window(rng: &mut Rng) -> QuietHours {
    let start = rng.range(0, 23);
    let end = (start + rng.range(1, 12)) % 24;
    QuietHours::new(time(start, 0), time(end, rng.range(0, 3) * 15))
        .unwrap_or_else(|_| unreachable!("start and end differ by at least an hour"))
}

/// Recipient `i`'s preferences at the start: mostly nothing chosen; some with quiet hours (the
/// classic 22:00 to 07:00, night for some zones at the start), some opted in to marketing texts,
/// some off email, a few unsubscribed.
pub fn initial_preferences(i: usize) -> Option<Preferences> {
    let mut p = Preferences::default();
    match i % 7 {
        1 => {
            p.quiet_hours =
                Some(QuietHoursChoice::Window(QuietHours::new(time(22, 0), time(7, 0)).ok()?))
        }
        2 => {
            p.categories.insert(
                marketing(),
                CategoryChoice {
                    channels: [(Channel::Sms, true)].into(),
                    ..CategoryChoice::default()
                },
            );
        }
        3 if i.is_multiple_of(3) => {
            p.channels.insert(Channel::Email, false);
        }
        4 if i % 13 == 4 => p.unsubscribed = true,
        _ => return None,
    }
    Some(p)
}

fn marketing() -> Category {
    Category::new("marketing").unwrap_or_else(|_| unreachable!("a valid category"))
}

/// What the preference fault changes about a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Global unsubscribe.
    Unsubscribe,
    /// Back from it.
    Resubscribe,
    /// A channel off, or on.
    Channel(Channel, bool),
    /// A category off everywhere, or back to no choice.
    Category(&'static str, Option<bool>),
    /// Marketing texts opted in, or out.
    MarketingSms(bool),
    /// Quiet hours set, or turned off.
    QuietHours(Option<QuietHours>),
    /// The stored phone number removed, or put back.
    Phone(bool),
}

impl Change {
    /// A random change.
    pub fn pick(rng: &mut Rng) -> Change {
        let channel = [Channel::Email, Channel::Sms, Channel::InApp, Channel::Push][rng.index(4)];
        match rng.index(10) {
            0 => Change::Unsubscribe,
            1 => Change::Resubscribe,
            2 => Change::Channel(channel, false),
            3 => Change::Channel(channel, true),
            4 => Change::Category(["orders", "marketing"][rng.index(2)], Some(false)),
            5 => Change::Category(["orders", "marketing"][rng.index(2)], None),
            6 => Change::MarketingSms(rng.chance(0.5)),
            7 => Change::QuietHours(Some(window(rng))),
            8 => Change::QuietHours(None),
            _ => Change::Phone(rng.chance(0.4)),
        }
    }

    /// The preferences after the change, if it changes preferences.
    pub fn preferences(&self, current: &Preferences) -> Option<Preferences> {
        let mut p = current.clone();
        match self {
            Change::Unsubscribe => p.unsubscribed = true,
            Change::Resubscribe => p.unsubscribed = false,
            Change::Channel(channel, on) => {
                p.channels.insert(*channel, *on);
            }
            Change::Category(category, enabled) => {
                let category = Category::new(*category).ok()?;
                p.categories.entry(category).or_default().enabled = *enabled;
            }
            Change::MarketingSms(on) => {
                p.categories.entry(marketing()).or_default().channels.insert(Channel::Sms, *on);
            }
            Change::QuietHours(window) => {
                p.quiet_hours =
                    Some(window.map_or(QuietHoursChoice::Off, QuietHoursChoice::Window));
            }
            Change::Phone(_) => return None,
        }
        Some(p)
    }

    /// The contact data after the change, if it changes the contact data of recipient `i`.
    pub fn contact(&self, i: usize, current: &Contact) -> Option<Contact> {
        match self {
            Change::Phone(present) => {
                Some(Contact { phone: if *present { phone(i) } else { None }, ..current.clone() })
            }
            _ => None,
        }
    }
}

/// Why a provider call for `request` on `channel` at `now_ms` breaks the directory invariants,
/// given what the directory held for its recipient (`entry`): `("preferences" | "quiet-hours" |
/// "no-address", why)`, or `None` when the call was allowed.
pub fn forbidden(
    policy: &Policy,
    request: &Request,
    channel: Channel,
    entry: Option<&RecipientEntry>,
    now_ms: u64,
) -> Option<(&'static str, String)> {
    let contact = entry.and_then(RecipientEntry::contact);
    let inline = &request.recipient;
    let has_address = match channel {
        Channel::Email => inline.email.is_some() || contact.is_some_and(|c| c.email.is_some()),
        Channel::Sms => inline.phone.is_some() || contact.is_some_and(|c| c.phone.is_some()),
        Channel::Push => entry.is_some_and(|e| !e.devices().is_empty()),
        Channel::InApp | Channel::Chat => true,
    };
    if !has_address {
        return Some(("no-address", format!("no {channel} address given or stored")));
    }
    let category = &request.category;
    if policy.is_critical(category) {
        return None;
    }
    let nothing = Preferences::default();
    let p = entry.map_or(&nothing, |e| &e.preferences);
    let choice = p.categories.get(category);
    let specific = choice.and_then(|c| c.channels.get(&channel)).copied();
    let default_on = policy.filter_rules(category).defaults.get(&channel).copied().unwrap_or(true);
    let refused = if p.unsubscribed {
        Some("the recipient had unsubscribed".to_owned())
    } else {
        match specific {
            Some(false) => Some(format!("the recipient had switched {category} off on {channel}")),
            Some(true) => None,
            None if choice.and_then(|c| c.enabled) == Some(false) => {
                Some(format!("the recipient had switched {category} off"))
            }
            None if inline.opt_out.contains(&channel)
                || p.channels.get(&channel) == Some(&false) =>
            {
                Some(format!("the recipient had opted out of {channel}"))
            }
            None if !default_on => Some(format!("{category} on {channel} was not opted in")),
            None => None,
        }
    };
    if let Some(why) = refused {
        return Some(("preferences", why));
    }
    let window = match p.quiet_hours {
        Some(QuietHoursChoice::Window(window)) => Some(window),
        Some(QuietHoursChoice::Off) => None,
        None => policy.quiet_hours,
    }?;
    let zone = entry.and_then(RecipientEntry::time_zone)?;
    let local =
        DateTime::from_timestamp_millis(i64::try_from(now_ms).ok()?)?.with_timezone(&zone.tz());
    let t = local.time();
    let (start, end) = (window.start.time(), window.end.time());
    let quiet = if start < end { start <= t && t < end } else { t >= start || t < end };
    quiet.then(|| {
        let hm = format!("{:02}:{:02}", t.hour(), t.minute());
        (
            "quiet-hours",
            format!("it was {hm} in {zone}, inside the recipient's quiet hours {window}"),
        )
    })
}

/// The recipient id of workload recipient `i` (as `world::recipient`).
pub fn id(i: usize) -> RecipientId {
    crate::world::recipient(i)
}
