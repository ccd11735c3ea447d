//! The message body, built from one message: `{"text": ...}`.
//!
//! Slack renders `text` as mrkdwn, so a template can use `*bold*` and `<https://..|links>`.
//! Blocks are left out: with plain `text` Slack shows the same in the channel and in
//! notifications, and a block would need the text split at 3,000 characters.

use serde::Serialize;
use steps::outcome::{ErrorClass, ProviderError};
use steps::render::Content;
use workflows::ports::Outbound;

use crate::inapp::content_channel;

/// The longest text sent, in characters: Slack truncates messages beyond 40,000.
pub const TEXT_CHARS_MAX: usize = 40_000;

/// The body.
#[derive(Debug, Serialize)]
pub(crate) struct PostMessage<'a> {
    /// The message, mrkdwn.
    pub text: &'a str,
}

/// The body for `message`, or the classified reason it cannot be sent.
pub(crate) fn post_message(message: &Outbound) -> Result<PostMessage<'_>, ProviderError> {
    let text = match &message.content {
        Content::Chat { text } => text,
        other => {
            return Err(ProviderError::new(
                ErrorClass::ProviderConfig,
                None,
                None,
                &format!("chat provider got {} content", content_channel(other)),
            ));
        }
    };
    if text.trim().is_empty() {
        // Slack would answer 400 no_text.
        return Err(ProviderError::new(
            ErrorClass::PermanentRecipient,
            None,
            None,
            "the chat text is empty",
        ));
    }
    if text.chars().count() > TEXT_CHARS_MAX {
        return Err(ProviderError::new(
            ErrorClass::PermanentRecipient,
            None,
            None,
            &format!("the chat text is longer than {TEXT_CHARS_MAX} characters"),
        ));
    }
    Ok(PostMessage { text })
}
