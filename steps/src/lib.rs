//! Pure step decisions of the courant lifecycle.
//!
//! Nothing in this crate does I/O, reads the clock or draws global randomness: time and seeds are
//! arguments, so the simulator replays every decision exactly.
//!
//! # Layout
//! - [`model`]: ids, addresses and the notification request.
//! - [`collapse`]: collapse groups ("3 new messages"): the reference join and close, and the
//!   template variables.
//! - [`correlation`]: what relates notifications: the event (dedup) and the collapse key.
//! - [`filter`]: the preference filter (may this go out on this channel, now?).
//! - [`preferences`]: a recipient's choices and the rule that weighs them.
//! - [`quiet`]: quiet hours in the recipient's time zone.
//! - [`recipient`]: the recipients directory's data (profile, devices, locale, time zone).
//! - [`fallback`]: channel fallback (SMS exhausted → email), only where it cannot double-deliver.
//! - [`render`]: tera 2 templates: versions with parts per locale, compiled once, rendered per
//!   channel with each channel's limits.
//! - [`locale`]: language tags and their fallback chain (`fr-CA` → `fr` → the default).
//! - [`sms`]: GSM-7 / UCS-2 encoding and SMS segment counting.
//! - [`rate`]: the per-channel rate limit, the rate decision and the provider send pacer.
//! - [`limits`]: per-recipient windows and category caps, taken all or nothing.
//! - [`retry`]: retry policies as data, seeded backon delays.
//! - [`outcome`]: what a provider call came to, and the error taxonomy.

pub mod collapse;
pub mod correlation;
pub mod fallback;
pub mod filter;
pub mod limits;
pub mod locale;
pub mod model;
pub mod outcome;
pub mod preferences;
pub mod quiet;
pub mod rate;
pub mod recipient;
pub mod render;
pub mod retry;
pub mod sms;
