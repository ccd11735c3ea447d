//! The recipients directory's data: what an application stores about a recipient (addresses,
//! push devices, locale, time zone) and their preferences, as one entry per tenant and recipient.
//!
//! Everything here is validated when it is built or deserialized, so a stored entry is always
//! well-formed. Personal data keeps the masking of [`crate::model`]: addresses print masked, a
//! device token never prints at all (it is a bearer credential for the device), and a device is
//! named by a [`DeviceId`], a short hash of its token that is safe to show, log and delete by.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::locale::Locale;
use crate::model::{EmailAddress, IdError, PhoneNumber, RecipientId, check_id};
use crate::preferences::Preferences;

/// The most push devices a recipient may have. A person has a few phones, tablets and browsers;
/// more than this is a client registering a fresh token on every start without removing the old
/// one, and each send would fan out to all of them.
pub const DEVICES_MAX: usize = 10;
/// The longest device token accepted, in bytes. APNs tokens are 64 hex characters, FCM
/// registration tokens about 160; a web push subscription (endpoint and keys) fits in 4 KiB.
pub const DEVICE_TOKEN_LEN_MAX: usize = 4_096;

/// Why a value of the directory was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not a known IANA time zone.
    #[error("must be an IANA time zone name such as 'Europe/Paris' or 'America/New_York'")]
    TimeZone,
    /// An unusable device token.
    #[error(
        "must be 1 to {DEVICE_TOKEN_LEN_MAX} bytes of printable ASCII (the token the platform \
         issued)"
    )]
    DeviceToken,
}

/// An IANA time zone (`Europe/Paris`), from the database compiled into `chrono-tz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    /// Parses an IANA name (case-sensitive, as the database spells it).
    pub fn parse(s: &str) -> Result<Self, Error> {
        chrono_tz::Tz::from_str(s).map(Self).map_err(|_| Error::TimeZone)
    }

    /// The zone, for local-time arithmetic.
    pub fn tz(self) -> chrono_tz::Tz {
        self.0
    }

    /// The IANA name.
    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl TryFrom<String> for TimeZone {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        TimeZone::parse(&s)
    }
}

impl From<TimeZone> for String {
    fn from(z: TimeZone) -> String {
        z.name().to_owned()
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A push platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// Apple Push Notification service.
    Ios,
    /// Firebase Cloud Messaging.
    Android,
    /// Web push (a browser subscription).
    Web,
}

impl Platform {
    /// The wire name (`ios`, `android`, `web`).
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
            Platform::Web => "web",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device's push token. Whoever holds it can push to the device, so it is a secret: its `Debug`
/// and `Display` print `***`, and the API never returns it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceToken(String);

impl DeviceToken {
    /// Checks a token: 1 to [`DEVICE_TOKEN_LEN_MAX`] bytes of printable ASCII (spaces allowed, for
    /// a web push subscription's JSON).
    pub fn parse(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty()
            && s.len() <= DEVICE_TOKEN_LEN_MAX
            && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        if ok { Ok(Self(s.to_owned())) } else { Err(Error::DeviceToken) }
    }

    /// The token, for the provider call only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceToken {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        DeviceToken::parse(&s)
    }
}

impl From<DeviceToken> for String {
    fn from(t: DeviceToken) -> String {
        t.0
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A device's stable, non-secret name: `d` and the first 16 hex digits of the SHA-256 of its
/// platform and token. The same token on the same platform always gets the same id (registering
/// it twice changes nothing), and the id reveals nothing usable about the token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    /// The id of a token on a platform.
    pub fn of(platform: Platform, token: &DeviceToken) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(platform.as_str().as_bytes());
        hasher.update(b":");
        hasher.update(token.expose().as_bytes());
        let digest = hasher.finalize();
        Self(format!("d{}", &hex::encode(digest)[..16]))
    }

    /// Checks an id given by a client (a path segment): the id syntax of [`check_id`].
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        check_id(&s)?;
        Ok(Self(s))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        DeviceId::new(s)
    }
}

impl From<DeviceId> for String {
    fn from(d: DeviceId) -> String {
        d.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registered push device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Its id ([`DeviceId::of`] its platform and token).
    pub id: DeviceId,
    /// Its platform.
    pub platform: Platform,
    /// Its push token (secret).
    pub token: DeviceToken,
    /// When it was registered, ms since the Unix epoch.
    pub added_at_ms: u64,
}

impl Device {
    /// A device registered at `now_ms`, its id derived from the token.
    pub fn new(platform: Platform, token: DeviceToken, now_ms: u64) -> Self {
        Self { id: DeviceId::of(platform, &token), platform, token, added_at_ms: now_ms }
    }
}

/// The part of a profile the application sets in one `PUT`: addresses, locale, time zone. Every
/// field is optional; a `PUT` replaces them all (devices are kept, they have their own calls).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Email address, for the email channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAddress>,
    /// E.164 phone number, for the SMS channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<PhoneNumber>,
    /// Preferred locale (the templates' tag, normalised): a notification submitted without a
    /// locale is rendered in it, pinned when it is accepted with the template version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    /// Time zone, for quiet hours. Without one, quiet hours are not applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZone>,
}

/// A stored recipient profile: the contact data and the push devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Addresses, locale, time zone.
    pub contact: Contact,
    /// Push devices, oldest first (at most [`DEVICES_MAX`]).
    pub devices: Vec<Device>,
}

/// Everything the directory holds about one recipient of a tenant, as one read returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientEntry {
    /// The recipient.
    pub id: RecipientId,
    /// The profile, once the application stored one (`PUT /v1/recipients/{id}`).
    pub profile: Option<Profile>,
    /// The recipient's preferences (empty until set: every default applies).
    pub preferences: Preferences,
    /// Grows by one with every write to the entry (profile, device, preferences), from 1: the
    /// history names the revision a decision read.
    pub revision: u64,
    /// When the entry was last written, ms since the Unix epoch.
    pub updated_at_ms: u64,
}

impl RecipientEntry {
    /// The stored contact data, if a profile exists.
    pub fn contact(&self) -> Option<&Contact> {
        self.profile.as_ref().map(|p| &p.contact)
    }

    /// The stored devices (none without a profile).
    pub fn devices(&self) -> &[Device] {
        self.profile.as_ref().map_or(&[], |p| p.devices.as_slice())
    }

    /// The stored time zone, if any.
    pub fn time_zone(&self) -> Option<TimeZone> {
        self.contact().and_then(|c| c.time_zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_come_from_the_iana_database() {
        let paris = TimeZone::parse("Europe/Paris").unwrap();
        assert_eq!(paris.name(), "Europe/Paris");
        assert_eq!(serde_json::to_string(&paris).unwrap(), "\"Europe/Paris\"");
        assert_eq!(serde_json::from_str::<TimeZone>("\"UTC\"").unwrap().name(), "UTC");
        for bad in ["", "Paris", "europe/paris", "Mars/Olympus_Mons", "+02:00"] {
            assert_eq!(TimeZone::parse(bad), Err(Error::TimeZone), "{bad:?}");
        }
    }

    #[test]
    fn device_tokens_never_print_and_ids_are_stable_hashes() {
        let token = DeviceToken::parse("a1b2c3d4e5f6").unwrap();
        assert_eq!(format!("{token:?} {token}"), "*** ***");
        let device = Device::new(Platform::Ios, token.clone(), 5);
        let shown = format!("{device:?}");
        assert!(!shown.contains("a1b2c3d4e5f6"), "{shown}");
        assert_eq!(device.id, DeviceId::of(Platform::Ios, &token));
        assert_eq!(device.id.as_str().len(), 17);
        assert!(device.id.as_str().starts_with('d'));
        // The platform is part of the id, and the id is a valid path segment.
        assert_ne!(device.id, DeviceId::of(Platform::Android, &token));
        assert!(DeviceId::new(device.id.as_str()).is_ok());
        // Stored as JSON with the token (the store needs it), read back equal.
        let json = serde_json::to_string(&device).unwrap();
        assert_eq!(serde_json::from_str::<Device>(&json).unwrap(), device);
        for bad in [String::new(), "tab\there".into(), "x".repeat(DEVICE_TOKEN_LEN_MAX + 1)] {
            assert_eq!(DeviceToken::parse(&bad), Err(Error::DeviceToken));
        }
    }

    #[test]
    fn contact_fields_are_validated_when_deserialized() {
        let ok: Contact = serde_json::from_str(
            r#"{"email":"ada@example.com","phone":"+447911123456","locale":"en-GB","time_zone":"Europe/London"}"#,
        )
        .unwrap();
        assert_eq!(ok.time_zone.unwrap().name(), "Europe/London");
        // Masked in Debug.
        let shown = format!("{ok:?}");
        assert!(!shown.contains("ada@") && !shown.contains("7911123456"), "{shown}");
        for bad in [
            r#"{"phone":"07911123456"}"#,
            r#"{"email":"nobody"}"#,
            r#"{"time_zone":"Nowhere"}"#,
            r#"{"locale":"english"}"#,
            r#"{"locale":"en--GB"}"#,
            r#"{"nickname":"ada"}"#,
        ] {
            assert!(serde_json::from_str::<Contact>(bad).is_err(), "{bad}");
        }
    }
}
