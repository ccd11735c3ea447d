//! The preference filter: is this notification allowed to go out on this channel at all?
//!
//! The foundation honours the recipient's per-channel opt-out and the presence of an address for
//! the channel. Stored preferences, categories and global unsubscribe deepen this step later; the
//! shape (a decision plus the rule that made it) stays.

use serde::{Deserialize, Serialize};

use crate::model::{Category, Channel, Request};

/// Why a notification was skipped without being sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SkipReason {
    /// The recipient opted out of the channel.
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
}

/// Decides whether `request` may go out on `channel`.
pub fn decide(request: &Request, channel: Channel) -> FilterDecision {
    let recipient = &request.recipient;
    if recipient.opt_out.contains(&channel) {
        return FilterDecision::Skip(SkipReason::OptedOut { channel });
    }
    let has_address = match channel {
        Channel::Email => recipient.email.is_some(),
        Channel::Sms => recipient.phone.is_some(),
        // In-app is addressed by the recipient id itself; push devices and chat targets arrive
        // with the channels issue, until then the provider answers for them.
        Channel::InApp | Channel::Push | Channel::Chat => true,
    };
    if !has_address {
        return FilterDecision::Skip(SkipReason::NoAddress { channel });
    }
    FilterDecision::Allow { channel, rule: format!("no opt-out for {channel}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

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
            correlation: Default::default(),
        }
    }

    #[test]
    fn opt_out_skips_only_that_channel() {
        let r = request(Channel::Email, vec![Channel::Email], true);
        assert_eq!(
            decide(&r, Channel::Email),
            FilterDecision::Skip(SkipReason::OptedOut { channel: Channel::Email })
        );
        assert!(matches!(decide(&r, Channel::InApp), FilterDecision::Allow { .. }));
    }

    #[test]
    fn missing_address_skips() {
        let r = request(Channel::Email, vec![], false);
        assert_eq!(
            decide(&r, Channel::Email),
            FilterDecision::Skip(SkipReason::NoAddress { channel: Channel::Email })
        );
        assert_eq!(
            decide(&r, Channel::Sms),
            FilterDecision::Skip(SkipReason::NoAddress { channel: Channel::Sms })
        );
    }

    #[test]
    fn allowed_when_address_and_no_opt_out() {
        let r = request(Channel::Email, vec![Channel::Sms], true);
        assert!(matches!(decide(&r, Channel::Email), FilterDecision::Allow { .. }));
    }
}
