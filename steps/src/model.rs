//! Ids and value types shared by every layer of courant.
//!
//! Ids are newtypes so a tenant id can never be passed where a notification id is expected.
//! Addresses are newtypes whose `Debug` and `Display` mask the personal part, so a stray
//! `{:?}` in a log line cannot leak a phone number or an email address.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::locale::Locale;

/// The longest id (tenant, recipient, template, category, provider) accepted anywhere. Ids end up
/// in Redis keys and log lines; a limit keeps both bounded.
pub const ID_LEN_MAX: usize = 128;

/// A delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Email through an email provider (SendGrid, SES, SMTP).
    Email,
    /// SMS through an SMS provider (Twilio, ...).
    Sms,
    /// Mobile push (FCM, APNs).
    Push,
    /// The in-app inbox, stored by courant itself.
    InApp,
    /// Chat or outbound webhook (Slack, signed webhook).
    Chat,
}

impl Channel {
    /// Every channel, in a fixed order (used for per-channel tables and exhaustive tests).
    pub const ALL: [Channel; 5] =
        [Channel::Email, Channel::Sms, Channel::Push, Channel::InApp, Channel::Chat];

    /// The wire name of the channel (`email`, `sms`, `push`, `in_app`, `chat`).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::InApp => "in_app",
            Channel::Chat => "chat",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("must not be empty")]
    Empty,
    /// The id is longer than [`ID_LEN_MAX`].
    #[error("must be at most {ID_LEN_MAX} characters")]
    TooLong,
    /// The id has a character outside `[A-Za-z0-9._-]`.
    #[error("may only contain letters, digits, '.', '_' and '-'")]
    BadCharacter,
}

/// Checks the common id syntax: 1..=128 characters of `[A-Za-z0-9._-]`. The restriction keeps ids
/// safe inside Redis keys (no `:`, `{` or `}`), URLs and log lines.
pub fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > ID_LEN_MAX {
        return Err(IdError::TooLong);
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                check_id(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl $name {
            /// Builds the id after checking its syntax (see [`check_id`]).
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                Self::try_from(s.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The tenant that owns a notification; every key and lookup is scoped by it.
    TenantId
);
id_type!(
    /// A notification's id (`n_` + ULID when courant mints it).
    NotificationId
);
id_type!(
    /// The application's id for a recipient.
    RecipientId
);
id_type!(
    /// A template's id, the name of its folder in the templates directory.
    TemplateId
);
id_type!(
    /// A notification category (`otp`, `security`, `marketing`, `order_updates`, ...).
    Category
);
id_type!(
    /// A configured provider's name (`sendgrid`, `twilio`, `inapp`, ...).
    ProviderName
);

/// A send attempt on one channel, counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attempt(pub u32);

impl Attempt {
    /// The first attempt.
    pub const FIRST: Attempt = Attempt(1);

    /// The attempt after this one.
    pub fn next(self) -> Attempt {
        Attempt(self.0.saturating_add(1))
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why an address was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not an E.164 number.
    #[error("must be an E.164 phone number: '+' then 8 to 15 digits, the first not 0")]
    NotE164,
    /// Not a plausible email address.
    #[error("must be an email address of at most 254 characters, local part at most 64")]
    NotEmail,
}

/// An E.164 phone number (`+` then 8..=15 digits). Its `Debug` and `Display` mask the middle.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses an E.164 number.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let digits = s.strip_prefix('+').ok_or(AddressError::NotE164)?;
        let ok = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok { Ok(Self(s.to_owned())) } else { Err(AddressError::NotE164) }
    }

    /// The full number, for the provider call only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PhoneNumber::parse(&s)
    }
}

impl From<PhoneNumber> for String {
    fn from(p: PhoneNumber) -> String {
        p.0
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `+44******12`: enough to tell two numbers apart in an incident, not enough to call one.
        let s = &self.0;
        write!(f, "{}******{}", &s[..3.min(s.len())], &s[s.len().saturating_sub(2)..])
    }
}

/// An email address (syntax checked loosely: real validity only comes from bounces). Its `Debug`
/// and `Display` mask the local part.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses an address: `local@domain`, ≤ 254 characters, local part ≤ 64, a dot in the domain,
    /// no whitespace, control characters or angle brackets (header injection).
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let (local, domain) = s.rsplit_once('@').ok_or(AddressError::NotEmail)?;
        let clean = |p: &str| {
            !p.is_empty()
                && p.chars().all(|c| !c.is_whitespace() && !c.is_control() && !"<>,;\"".contains(c))
        };
        let ok = s.len() <= 254
            && local.len() <= 64
            && clean(local)
            && clean(domain)
            && !local.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.');
        if ok { Ok(Self(s.to_owned())) } else { Err(AddressError::NotEmail) }
    }

    /// The full address, for the provider call only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        EmailAddress::parse(&s)
    }
}

impl From<EmailAddress> for String {
    fn from(e: EmailAddress) -> String {
        e.0
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or(("", &self.0));
        write!(f, "{}***@{}", local.chars().next().unwrap_or('*'), domain)
    }
}

/// Who a notification is for, with the addresses it was submitted with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// The application's id for the recipient (scopes rate limits and the in-app inbox).
    pub id: RecipientId,
    /// Email address, needed for the email channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAddress>,
    /// E.164 phone number, needed for the SMS channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<PhoneNumber>,
    /// Channels the recipient has opted out of. The filter step skips a notification on any of
    /// them; later issues add stored, per-category preferences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opt_out: Vec<Channel>,
}

/// A template pinned at acceptance: the id and the version that was published then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    /// The template's id.
    pub id: TemplateId,
    /// The version: a registry template's version number in decimal (`"3"`), or a built-in
    /// template's content hash (16 hex digits). The two never look alike: see
    /// [`TemplateRef::registry_version`].
    pub version: String,
}

impl TemplateRef {
    /// The registry version this pins, if it pins one: a decimal number without leading zeros
    /// that fits a `u32`. A built-in's 16-digit hash never does (it is longer than `u32::MAX`'s
    /// ten digits, or has a letter).
    pub fn registry_version(&self) -> Option<u32> {
        let v = &self.version;
        let decimal = !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit());
        if !decimal || (v.len() > 1 && v.starts_with('0')) {
            return None;
        }
        v.parse().ok().filter(|n| *n > 0)
    }
}

/// What the application asked for: one recipient, one message intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The recipient and their addresses.
    pub recipient: Recipient,
    /// The channel to deliver on.
    pub channel: Channel,
    /// The template, pinned to a version.
    pub template: TemplateRef,
    /// The variables the template renders with.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The category (drives preferences and policies in later issues).
    pub category: Category,
    /// The locale to render in (the template falls back along `fr-CA` → `fr` → its default).
    /// Absent: the template's default locale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    /// The event it reports and the group it may be collapsed into, if any.
    #[serde(default, skip_serializing_if = "crate::correlation::Correlation::is_empty")]
    pub correlation: crate::correlation::Correlation,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_when_deserialized() {
        let ok: TenantId = serde_json::from_str("\"acme-1\"").unwrap();
        assert_eq!(ok.as_str(), "acme-1");
        let err = serde_json::from_str::<TenantId>("\"a:b\"").unwrap_err().to_string();
        assert!(err.contains("may only contain"), "{err}");
        assert!(serde_json::from_str::<TenantId>("\"\"").is_err());
    }

    #[test]
    fn registry_versions_are_told_from_content_hashes() {
        let pin = |v: &str| TemplateRef { id: TemplateId::new("t").unwrap(), version: v.into() };
        assert_eq!(pin("1").registry_version(), Some(1));
        assert_eq!(pin("4294967295").registry_version(), Some(u32::MAX));
        for hash in ["0123456789012345", "00000000000000ff", "4294967296", "0", "01", "v1", ""] {
            assert_eq!(pin(hash).registry_version(), None, "{hash}");
        }
    }

    #[test]
    fn addresses_are_validated_and_masked() {
        let phone = PhoneNumber::parse("+447911123456").unwrap();
        assert_eq!(format!("{phone:?}"), "+44******56");
        assert!(PhoneNumber::parse("07911123456").is_err());
        assert!(PhoneNumber::parse("+0123456789").is_err());
        let email = EmailAddress::parse("ada@example.com").unwrap();
        assert_eq!(format!("{email}"), "a***@example.com");
        for bad in ["ada", "ada@", "@example.com", "a b@example.com", "ada@example", "a@b@c.com"] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
