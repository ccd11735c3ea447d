//! Quiet hours: a daily window of local time (22:00 to 07:00, say) during which a recipient gets
//! no non-critical messages. A message that comes due inside the window waits for its end; it is
//! never dropped for it (the lifecycle skips it only when the end falls after its time budget).
//!
//! The window is local wall-clock time in the recipient's IANA time zone, so it follows daylight
//! saving time: on the night the clocks change, 22:00 to 07:00 is an hour shorter or longer. Two
//! wall-clock oddities are settled here, once:
//! - the window's end falls in a gap (the clocks jump from 02:00 to 03:00 and the window ends at
//!   02:30): it ends at the first local time that exists after it, 03:00;
//! - the end is ambiguous (the clocks go back from 02:00 to 01:00 and the window ends at 01:30):
//!   it ends at the first occurrence that is still ahead.
//!
//! Whatever the zone and the date, [`window_end`] returns a time strictly after `now_ms` or
//! nothing, and never panics (a property test walks DST days of several zones).

use std::fmt;

use chrono::{DateTime, LocalResult, NaiveDateTime, NaiveTime, TimeDelta, TimeZone as _, Timelike};
use serde::{Deserialize, Serialize};

use crate::recipient::TimeZone;

/// A local time of day to the minute, `HH:MM` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LocalTime(NaiveTime);

/// Why a local time was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a local time of day as HH:MM, from 00:00 to 23:59")]
pub struct LocalTimeError;

impl LocalTime {
    /// Parses `HH:MM` (24-hour clock, two digits each).
    pub fn parse(s: &str) -> Result<Self, LocalTimeError> {
        let bytes = s.as_bytes();
        if bytes.len() != 5 || bytes[2] != b':' {
            return Err(LocalTimeError);
        }
        let number = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = &s[range];
            part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok()).flatten()
        };
        let (Some(hour), Some(minute)) = (number(0..2), number(3..5)) else {
            return Err(LocalTimeError);
        };
        NaiveTime::from_hms_opt(hour, minute, 0).map(Self).ok_or(LocalTimeError)
    }

    /// The time of day.
    pub fn time(self) -> NaiveTime {
        self.0
    }
}

impl TryFrom<String> for LocalTime {
    type Error = LocalTimeError;
    fn try_from(s: String) -> Result<Self, LocalTimeError> {
        LocalTime::parse(&s)
    }
}

impl From<LocalTime> for String {
    fn from(t: LocalTime) -> String {
        t.to_string()
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0.hour(), self.0.minute())
    }
}

/// A daily window of local time: from `start` (inclusive) to `end` (exclusive). When `end` is
/// earlier than `start` the window crosses midnight (22:00 to 07:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawWindow")]
pub struct QuietHours {
    /// When the window opens, local time.
    pub start: LocalTime,
    /// When it closes, local time.
    pub end: LocalTime,
}

/// The wire shape of [`QuietHours`], checked into one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    start: LocalTime,
    end: LocalTime,
}

/// Why a window was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("start and end must differ (a window from a time to itself would be empty)")]
pub struct EmptyWindow;

impl TryFrom<RawWindow> for QuietHours {
    type Error = EmptyWindow;
    fn try_from(raw: RawWindow) -> Result<Self, EmptyWindow> {
        QuietHours::new(raw.start, raw.end)
    }
}

impl QuietHours {
    /// A window; `start` and `end` must differ.
    pub fn new(start: LocalTime, end: LocalTime) -> Result<Self, EmptyWindow> {
        if start == end { Err(EmptyWindow) } else { Ok(Self { start, end }) }
    }

    /// Whether a local time of day is inside the window.
    pub fn contains(&self, t: NaiveTime) -> bool {
        let (start, end) = (self.start.0, self.end.0);
        if start < end { start <= t && t < end } else { t >= start || t < end }
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}–{}", self.start, self.end)
    }
}

/// The most minutes [`first_instant`] walks forward out of a DST gap. Real gaps are an hour at
/// most (a few zones have had two); a day is far beyond any, and keeps the walk bounded.
const GAP_MINUTES_MAX: i64 = 24 * 60;

/// The first instant strictly after `after_ms` whose local time in `tz` is `local` or, when
/// `local` falls in a gap, the first local time after it. `None` only if the zone data has a gap
/// longer than a day, which none has.
fn first_instant(tz: chrono_tz::Tz, local: NaiveDateTime, after_ms: i64) -> Option<i64> {
    for minutes in 0..=GAP_MINUTES_MAX {
        let candidate = local + TimeDelta::minutes(minutes);
        let found = match tz.from_local_datetime(&candidate) {
            LocalResult::Single(t) => Some(t.timestamp_millis()),
            LocalResult::Ambiguous(first, second) => {
                let (first, second) = (first.timestamp_millis(), second.timestamp_millis());
                Some(if first > after_ms { first } else { second })
            }
            LocalResult::None => None,
        };
        if let Some(ms) = found.filter(|ms| *ms > after_ms) {
            return Some(ms);
        }
    }
    None
}

/// When the quiet-hours window that `now_ms` is in ends, in ms since the Unix epoch, or `None`
/// when `now_ms` is outside the window (in `zone`'s local time). The end is always after
/// `now_ms`.
pub fn window_end(window: &QuietHours, zone: TimeZone, now_ms: u64) -> Option<u64> {
    let tz = zone.tz();
    let now = i64::try_from(now_ms).ok()?;
    let local = DateTime::from_timestamp_millis(now)?.with_timezone(&tz).naive_local();
    let t = local.time();
    if !window.contains(t) {
        return None;
    }
    let today = local.date();
    // A window crossing midnight that opened this evening ends tomorrow.
    let end_date = if window.start.0 > window.end.0 && t >= window.start.0 {
        today.succ_opt()?
    } else {
        today
    };
    let end = first_instant(tz, end_date.and_time(window.end.0), now)?;
    u64::try_from(end).ok()
}

/// `ms` as RFC 3339 UTC to the second, for history notes.
pub fn utc(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map_or_else(|| format!("{ms} ms"), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// `ms` as local `HH:MM` in `zone`, for history notes.
pub fn local_hm(ms: u64, zone: TimeZone) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map_or_else(String::new, |t| t.with_timezone(&zone.tz()).format("%H:%M").to_string())
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use proptest::prelude::*;

    use super::*;

    fn window(start: &str, end: &str) -> QuietHours {
        QuietHours::new(LocalTime::parse(start).unwrap(), LocalTime::parse(end).unwrap()).unwrap()
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::parse(name).unwrap()
    }

    /// ms of a UTC date and time.
    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
        let t = NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, mi, 0).unwrap();
        t.and_utc().timestamp_millis() as u64
    }

    #[test]
    fn local_times_parse_strictly() {
        assert_eq!(LocalTime::parse("07:05").unwrap().to_string(), "07:05");
        assert_eq!(LocalTime::parse("23:59").unwrap().to_string(), "23:59");
        for bad in ["7:05", "24:00", "12:60", "12-00", "1200", "ab:cd", "+1:00", " 1:00", ""] {
            assert_eq!(LocalTime::parse(bad), Err(LocalTimeError), "{bad:?}");
        }
        let empty = serde_json::from_str::<QuietHours>(r#"{"start":"22:00","end":"22:00"}"#);
        assert!(empty.unwrap_err().to_string().contains("must differ"));
        let extra = serde_json::from_str::<QuietHours>(r#"{"start":"22:00","end":"07:00","x":1}"#);
        assert!(extra.is_err());
        let ok: QuietHours = serde_json::from_str(r#"{"start":"22:00","end":"07:00"}"#).unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"start":"22:00","end":"07:00"}"#);
    }

    #[test]
    fn a_window_across_midnight_ends_the_next_morning() {
        let w = window("22:00", "07:00");
        let paris = zone("Europe/Paris"); // UTC+1 in January
        // 23:30 local on 10 January: ends 07:00 local on the 11th = 06:00Z.
        assert_eq!(window_end(&w, paris, at(2026, 1, 10, 22, 30)), Some(at(2026, 1, 11, 6, 0)));
        // 03:00 local: ends 07:00 the same day.
        assert_eq!(window_end(&w, paris, at(2026, 1, 11, 2, 0)), Some(at(2026, 1, 11, 6, 0)));
        // The edges: 22:00 is inside, 07:00 is outside.
        assert_eq!(window_end(&w, paris, at(2026, 1, 10, 21, 0)), Some(at(2026, 1, 11, 6, 0)));
        assert_eq!(window_end(&w, paris, at(2026, 1, 11, 6, 0)), None);
        assert_eq!(window_end(&w, paris, at(2026, 1, 11, 12, 0)), None);
    }

    #[test]
    fn a_daytime_window_ends_the_same_day() {
        let w = window("12:00", "14:00");
        let tokyo = zone("Asia/Tokyo"); // UTC+9
        assert_eq!(window_end(&w, tokyo, at(2026, 3, 1, 4, 0)), Some(at(2026, 3, 1, 5, 0)));
        assert_eq!(window_end(&w, tokyo, at(2026, 3, 1, 5, 0)), None);
        assert_eq!(window_end(&w, tokyo, at(2026, 3, 1, 2, 59)), None);
    }

    #[test]
    fn spring_forward_ends_the_window_after_the_gap() {
        // New York, 8 March 2026: 02:00 EST jumps to 03:00 EDT (07:00Z). A window ending at
        // 02:30 ends at 03:00 EDT, the first local time that exists after it.
        let ny = zone("America/New_York");
        let w = window("22:00", "02:30");
        let end = window_end(&w, ny, at(2026, 3, 8, 5, 0)); // 00:00 EST
        assert_eq!(end, Some(at(2026, 3, 8, 7, 0)));
        assert_eq!(window_end(&w, ny, end.unwrap()), None, "outside the window at its end");
        // A window ending at 07:00 is one hour shorter in UTC that night.
        let w = window("22:00", "07:00");
        assert_eq!(window_end(&w, ny, at(2026, 3, 8, 3, 0)), Some(at(2026, 3, 8, 11, 0)));
    }

    #[test]
    fn fall_back_picks_the_occurrence_still_ahead() {
        // New York, 1 November 2026: 02:00 EDT goes back to 01:00 EST (06:00Z); 01:00 to 02:00
        // happens twice, first at 05:00Z..06:00Z (EDT), then at 06:00Z..07:00Z (EST).
        let ny = zone("America/New_York");
        let w = window("22:00", "01:30");
        // 01:10 EDT (05:10Z): the first 01:30 (05:30Z) is ahead.
        assert_eq!(window_end(&w, ny, at(2026, 11, 1, 5, 10)), Some(at(2026, 11, 1, 5, 30)));
        // 01:10 EST (06:10Z), the second time round: the window holds again, and its end is the
        // second 01:30 (06:30Z), never the first, which is past.
        assert_eq!(window_end(&w, ny, at(2026, 11, 1, 6, 10)), Some(at(2026, 11, 1, 6, 30)));
    }

    #[test]
    fn half_hour_daylight_saving_and_far_offsets() {
        // Lord Howe Island moves by 30 minutes: on 5 April 2026 02:00 (UTC+11) goes back to
        // 01:30 (UTC+10:30).
        let lh = zone("Australia/Lord_Howe");
        let w = window("23:00", "01:45");
        let end = window_end(&w, lh, at(2026, 4, 4, 14, 20)).unwrap(); // 01:20 +11
        assert!(end > at(2026, 4, 4, 14, 20));
        assert_eq!(window_end(&w, lh, end), None);
        // Kiritimati is UTC+14: its local date is a day ahead of UTC's.
        let k = zone("Pacific/Kiritimati");
        let w = window("00:00", "06:00");
        assert_eq!(window_end(&w, k, at(2026, 1, 1, 12, 0)), Some(at(2026, 1, 1, 16, 0)));
    }

    fn arb_time() -> impl Strategy<Value = LocalTime> {
        (0u32..24, 0u32..60).prop_map(|(h, m)| LocalTime::parse(&format!("{h:02}:{m:02}")).unwrap())
    }

    const ZONES: [&str; 8] = [
        "America/New_York",
        "Europe/London",
        "Europe/Paris",
        "Australia/Lord_Howe",
        "America/Santiago",
        "Asia/Kolkata",
        "Pacific/Chatham",
        "UTC",
    ];

    proptest! {
        /// Around every DST change of 2025–2027 in zones that have them (and some that do not):
        /// no panic, the end is strictly ahead, at most a day and a bit away, and outside the
        /// window when it comes.
        #[test]
        fn the_end_is_always_ahead_and_outside_the_window(
            start in arb_time(),
            end in arb_time(),
            zone_index in 0..ZONES.len(),
            now_ms in at(2025, 1, 1, 0, 0)..at(2027, 12, 31, 0, 0),
        ) {
            prop_assume!(start != end);
            let w = QuietHours::new(start, end).unwrap();
            let z = zone(ZONES[zone_index]);
            if let Some(end_ms) = window_end(&w, z, now_ms) {
                prop_assert!(end_ms > now_ms);
                prop_assert!(end_ms - now_ms <= 26 * 3_600_000, "{} ms", end_ms - now_ms);
                prop_assert_eq!(window_end(&w, z, end_ms), None);
                // Half-way there it is the same window, announcing the same end.
                let probe = now_ms + (end_ms - now_ms) / 2;
                prop_assert_eq!(window_end(&w, z, probe), Some(end_ms));
            }
        }
    }
}
