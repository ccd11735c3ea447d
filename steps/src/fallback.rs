//! Channel fallback: where a notification goes when its channel failed for good (SMS exhausted →
//! email). One notification, at most one channel that delivers: a fallback only happens when the
//! failed channel cannot have delivered, the category allows it, and the recipient has the
//! fallback channel and permits it.

use serde::{Deserialize, Serialize};

use crate::filter::FilterDecision;
use crate::model::{Category, Channel, Request};

/// One fallback route: from a channel to another, for some categories or all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackRule {
    /// The channel that failed.
    pub from: Channel,
    /// The channel to try next.
    pub to: Channel,
    /// The categories it applies to; absent means every category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<Category>>,
}

impl FallbackRule {
    fn applies(&self, from: Channel, category: &Category) -> bool {
        self.from == from && self.categories.as_ref().is_none_or(|c| c.contains(category))
    }
}

/// The fallback decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum FallbackDecision {
    /// Go on with `channel`; `why` names the rule and the recipient check.
    To {
        /// The channel to try.
        channel: Channel,
        /// Why.
        why: String,
    },
    /// No fallback; `why` says what stopped it.
    None {
        /// Why not.
        why: String,
    },
}

/// Decides the fallback after `from` failed for good.
///
/// `tried` are the channels the notification already went through (no channel is tried twice);
/// `maybe_delivered` says whether an attempt on `from` had an unknown outcome, in which case the
/// message may have arrived and falling back could deliver it twice. `filter` is the preference
/// filter for a channel (`crate::filter::decide` with what the directory holds now): a channel it
/// skips is no fallback, one it defers for quiet hours is (the send waits for the window's end).
pub fn decide(
    request: &Request,
    rules: &[FallbackRule],
    from: Channel,
    tried: &[Channel],
    maybe_delivered: bool,
    filter: impl Fn(Channel) -> FilterDecision,
) -> FallbackDecision {
    if maybe_delivered {
        return FallbackDecision::None {
            why: format!(
                "an earlier {from} attempt had an unknown outcome and may have arrived; no fallback"
            ),
        };
    }
    let mut refusals = Vec::new();
    for rule in rules.iter().filter(|r| r.applies(from, &request.category)) {
        if tried.contains(&rule.to) {
            refusals.push(format!("{} was tried already", rule.to));
            continue;
        }
        match filter(rule.to) {
            FilterDecision::Allow { channel, rule: allowed }
            | FilterDecision::Defer { channel, rule: allowed, .. } => {
                return FallbackDecision::To {
                    channel,
                    why: format!(
                        "{from} failed; falling back to {channel} ({from}→{channel} rule for \
                         category {}; {allowed})",
                        request.category
                    ),
                };
            }
            FilterDecision::Skip(reason) => refusals.push(reason.to_string()),
        }
    }
    let why = if refusals.is_empty() {
        format!("no fallback from {from} for category {}", request.category)
    } else {
        format!("no usable fallback from {from}: {}", refusals.join("; "))
    };
    FallbackDecision::None { why }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{self, Rules};
    use crate::model::*;

    /// `decide` with the filter as it is without stored data.
    fn decide(
        request: &Request,
        rules: &[FallbackRule],
        from: Channel,
        tried: &[Channel],
        maybe_delivered: bool,
    ) -> FallbackDecision {
        super::decide(request, rules, from, tried, maybe_delivered, |channel| {
            filter::decide(request, channel, &Rules::none(), None, 0)
        })
    }

    fn request(email: bool, opt_out: Vec<Channel>, category: &str) -> Request {
        Request {
            recipient: Recipient {
                id: RecipientId::new("u1").unwrap(),
                email: email.then(|| EmailAddress::parse("ada@example.com").unwrap()),
                phone: Some(PhoneNumber::parse("+447911123456").unwrap()),
                opt_out,
            },
            channel: Channel::Sms,
            template: TemplateRef { id: TemplateId::new("otp").unwrap(), version: "v".into() },
            data: Default::default(),
            category: Category::new(category).unwrap(),
            locale: None,
            correlation: Default::default(),
        }
    }

    fn sms_to_email(categories: Option<Vec<&str>>) -> Vec<FallbackRule> {
        vec![FallbackRule {
            from: Channel::Sms,
            to: Channel::Email,
            categories: categories
                .map(|c| c.into_iter().map(|c| Category::new(c).unwrap()).collect()),
        }]
    }

    #[test]
    fn falls_back_when_the_recipient_has_and_permits_the_channel() {
        let d = decide(
            &request(true, vec![], "otp"),
            &sms_to_email(None),
            Channel::Sms,
            &[Channel::Sms],
            false,
        );
        assert!(matches!(d, FallbackDecision::To { channel: Channel::Email, .. }), "{d:?}");
    }

    #[test]
    fn no_fallback_without_address_opt_in_category_or_after_unknown() {
        let rules = sms_to_email(None);
        let cases = [
            (request(false, vec![], "otp"), false, "no email address"),
            (request(true, vec![Channel::Email], "otp"), false, "opted out of email"),
            (request(true, vec![], "otp"), true, "unknown outcome"),
        ];
        for (req, maybe, what) in cases {
            let d = decide(&req, &rules, Channel::Sms, &[Channel::Sms], maybe);
            assert!(matches!(d, FallbackDecision::None { .. }), "{what}: {d:?}");
        }
        let only_security = sms_to_email(Some(vec!["security"]));
        let d = decide(&request(true, vec![], "otp"), &only_security, Channel::Sms, &[], false);
        assert!(matches!(d, FallbackDecision::None { .. }), "{d:?}");
        // A channel already tried is never tried again.
        let d =
            decide(&request(true, vec![], "otp"), &rules, Channel::Sms, &[Channel::Email], false);
        assert!(matches!(d, FallbackDecision::None { ref why } if why.contains("tried")), "{d:?}");
    }
}
