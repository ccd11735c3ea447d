//! What relates a notification to others: the event it reports (`event_id`: the same event for
//! the same recipient and channel within a window creates one notification) and the group it
//! may be merged into (`collapse_key`: "3 new messages" instead of three, where its category
//! asks for it).
//!
//! Both are the application's strings, checked when they arrive: 1 to [`KEY_LEN_MAX`] visible
//! ASCII characters. They may carry anything an application puts in an id (an order number, an
//! email address), so their `Debug` shows a fingerprint and a length, never the text.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest `event_id` or `collapse_key`.
pub const KEY_LEN_MAX: usize = 255;

/// Why an `event_id` or a `collapse_key` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Empty or longer than [`KEY_LEN_MAX`].
    #[error("must be 1 to {KEY_LEN_MAX} characters")]
    Length,
    /// A character outside visible ASCII (space and control characters included).
    #[error("must be visible ASCII without spaces")]
    Character,
}

fn check(s: &str) -> Result<(), KeyError> {
    if s.is_empty() || s.len() > KEY_LEN_MAX {
        return Err(KeyError::Length);
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeyError::Character);
    }
    Ok(())
}

/// FNV-1a of the text, shown instead of it.
fn fingerprint(s: &str) -> u32 {
    let hash = s
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash >> 32) as u32
}

macro_rules! key_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks and wraps the application's string.
            pub fn new(s: impl Into<String>) -> Result<Self, KeyError> {
                Self::try_from(s.into())
            }

            /// The text, for keys and the API's answers. Never log it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = KeyError;
            fn try_from(s: String) -> Result<Self, KeyError> {
                check(&s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(key: $name) -> String {
                key.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(#{:08x}, {} chars)", stringify!($name), fingerprint(&self.0), self.0.len())
            }
        }
    };
}

key_type!(
    /// The application's id of the event a notification reports (`order-1234-shipped`).
    EventId
);
key_type!(
    /// The group a notification may be merged into with others for the same recipient and
    /// channel (`chat-room-42`), where its category has a collapse window.
    CollapseKey
);

/// A notification's relations to others. Both parts are optional; most notifications have
/// neither.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Correlation {
    /// The event it reports: the same event for the same recipient and channel within the
    /// category's dedup window creates no second notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<EventId>,
    /// The group it may be merged into, where its category has a collapse window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<CollapseKey>,
}

impl Correlation {
    /// Whether it relates to nothing (what most notifications carry).
    pub fn is_empty(&self) -> bool {
        self.event_id.is_none() && self.collapse_key.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_never_shown_in_debug() {
        let event = EventId::new("signup:ada@example.com").unwrap();
        let shown = format!("{event:?}");
        assert!(shown.starts_with("EventId(#") && shown.ends_with(", 22 chars)"), "{shown}");
        assert!(!shown.contains("ada"), "{shown}");
        assert_eq!(event.as_str(), "signup:ada@example.com");
        assert_eq!(EventId::new(""), Err(KeyError::Length));
        assert_eq!(EventId::new("x".repeat(256)), Err(KeyError::Length));
        assert_eq!(CollapseKey::new("a b"), Err(KeyError::Character));
        assert_eq!(CollapseKey::new("é"), Err(KeyError::Character));
        assert!(CollapseKey::new("x".repeat(255)).is_ok());
        let err = serde_json::from_str::<Correlation>(r#"{"event_id": ""}"#).unwrap_err();
        assert!(err.to_string().contains("1 to 255"), "{err}");
        let empty: Correlation = serde_json::from_str("{}").unwrap();
        assert!(empty.is_empty());
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
    }
}
