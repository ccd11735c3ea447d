//! Template rendering with tera 2.
//!
//! A template is a folder of parts, one file per channel part (`email.subject`, `email.html`,
//! `email.text`, `sms.body`, `push.title`, `push.body`, `in_app.title`, `in_app.body`,
//! `chat.text`). The shell reads the files; this module only sees their text, so rendering stays
//! pure. Each template's version is a hash of its parts: a notification pins the version it was
//! accepted with, and rendering refuses a different one instead of sending a changed message.
//!
//! Tera 2 errors on undefined variables, which is what we want: a missing variable is a clear
//! error at submit time, never a broken message later. Only HTML parts are HTML-escaped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Channel, IdError, TemplateId, TemplateRef};

/// Largest template part accepted, in bytes. Templates are operator-authored; the cap keeps a
/// mistaken upload from turning every render into a memory hog.
pub const PART_BYTES_MAX: usize = 64 * 1024;
/// Longest SMS body after rendering, in characters (10 concatenated GSM-7 segments of 160 minus
/// headers is 1,530; providers cap at 1,600). Segment counting arrives with the templates issue.
pub const SMS_CHARS_MAX: usize = 1_600;
/// Longest push title and body after rendering, in bytes (APNs allows 4 KiB for the whole payload).
pub const PUSH_BYTES_MAX: usize = 2_048;
/// Longest email subject after rendering, in characters.
pub const SUBJECT_CHARS_MAX: usize = 998;

/// One part of a template, as read from its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// `email.subject`
    EmailSubject,
    /// `email.html` (HTML-escaped)
    EmailHtml,
    /// `email.text`
    EmailText,
    /// `sms.body`
    SmsBody,
    /// `push.title`
    PushTitle,
    /// `push.body`
    PushBody,
    /// `in_app.title`
    InAppTitle,
    /// `in_app.body`
    InAppBody,
    /// `chat.text`
    ChatText,
}

impl Part {
    /// Every part, in file-name order.
    pub const ALL: [Part; 9] = [
        Part::EmailSubject,
        Part::EmailHtml,
        Part::EmailText,
        Part::SmsBody,
        Part::PushTitle,
        Part::PushBody,
        Part::InAppTitle,
        Part::InAppBody,
        Part::ChatText,
    ];

    /// The part's file name inside the template folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Part::EmailSubject => "email.subject",
            Part::EmailHtml => "email.html",
            Part::EmailText => "email.text",
            Part::SmsBody => "sms.body",
            Part::PushTitle => "push.title",
            Part::PushBody => "push.body",
            Part::InAppTitle => "in_app.title",
            Part::InAppBody => "in_app.body",
            Part::ChatText => "chat.text",
        }
    }

    /// Parses a file name.
    pub fn from_file_name(name: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.file_name() == name)
    }

    /// The channel the part belongs to.
    pub fn channel(self) -> Channel {
        match self {
            Part::EmailSubject | Part::EmailHtml | Part::EmailText => Channel::Email,
            Part::SmsBody => Channel::Sms,
            Part::PushTitle | Part::PushBody => Channel::Push,
            Part::InAppTitle | Part::InAppBody => Channel::InApp,
            Part::ChatText => Channel::Chat,
        }
    }

    fn is_html(self) -> bool {
        matches!(self, Part::EmailHtml)
    }
}

/// The source text of one template part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSource {
    /// The template the part belongs to.
    pub template: TemplateId,
    /// Which part.
    pub part: Part,
    /// The tera source.
    pub source: String,
}

/// What a channel's provider sends, rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "channel")]
pub enum Content {
    /// An email: subject plus an HTML and/or a text body.
    Email {
        /// The subject line (no CR or LF).
        subject: String,
        /// The HTML body, escaped.
        html: Option<String>,
        /// The plain-text body.
        text: Option<String>,
    },
    /// An SMS body.
    Sms {
        /// The text.
        body: String,
    },
    /// A push notification.
    Push {
        /// The title.
        title: String,
        /// The body.
        body: String,
    },
    /// An in-app inbox entry.
    InApp {
        /// The title.
        title: String,
        /// The body.
        body: String,
    },
    /// A chat message.
    Chat {
        /// The text.
        text: String,
    },
}

/// Why a template could not be loaded or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// No template with this id is loaded.
    #[error("template '{0}' does not exist")]
    UnknownTemplate(TemplateId),
    /// The pinned version is not the loaded one (the template changed after acceptance).
    #[error("template '{id}' version {pinned} is no longer loaded (current is {loaded})")]
    VersionGone {
        /// The template.
        id: TemplateId,
        /// The version the notification pinned.
        pinned: String,
        /// The version loaded now.
        loaded: String,
    },
    /// The template has no part for the channel.
    #[error("template '{id}' has no {channel} part (needs {needs})")]
    NoChannel {
        /// The template.
        id: TemplateId,
        /// The channel asked for.
        channel: Channel,
        /// The part files the channel needs.
        needs: &'static str,
    },
    /// Tera rejected the template or the data (missing variable, syntax error, ...).
    #[error("template '{id}' part {part}: {message}")]
    Template {
        /// The template.
        id: TemplateId,
        /// The part file.
        part: &'static str,
        /// Tera's explanation, e.g. "Variable `name` is not defined".
        message: String,
    },
    /// The rendered text breaks a channel limit.
    #[error("template '{id}' part {part}: {message}")]
    Limit {
        /// The template.
        id: TemplateId,
        /// The part file.
        part: &'static str,
        /// Which limit.
        message: String,
    },
    /// A template folder name is not a valid id.
    #[error("template folder name '{name}' {reason}")]
    BadId {
        /// The folder name.
        name: String,
        /// Why.
        reason: IdError,
    },
}

/// The loaded templates: parts by template, each template with its version.
pub struct TemplateSet {
    tera: tera::Tera,
    templates: BTreeMap<TemplateId, Loaded>,
}

#[derive(Debug, Clone)]
struct Loaded {
    version: String,
    parts: Vec<Part>,
}

impl std::fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateSet").field("templates", &self.templates).finish()
    }
}

fn tera_name(id: &TemplateId, part: Part) -> String {
    // The suffix decides autoescaping: only `.html` is escaped (set explicitly below).
    let ext = if part.is_html() { "html" } else { "txt" };
    format!("{id}/{}.{ext}", part.file_name())
}

fn tera_message(error: &dyn std::error::Error) -> String {
    // Tera nests the useful sentence ("Variable `x` is not defined") in its source chain, and
    // follows it with a multi-line source excerpt; the first line of each level is what a caller
    // needs.
    let first_line = |e: &dyn std::error::Error| {
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default().trim();
        line.strip_prefix("error: ").unwrap_or(line).to_owned()
    };
    let mut message = first_line(error);
    let mut source = error.source();
    while let Some(inner) = source {
        let text = first_line(inner);
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = inner.source();
    }
    message
}

/// FNV-1a, 64 bit: a stable, dependency-free content hash for template versions (not a security
/// boundary: it only tells two contents apart).
fn fnv1a(bytes: impl IntoIterator<Item = u8>, mut hash: u64) -> u64 {
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

impl TemplateSet {
    /// Loads parts into a set. Fails on the first part tera cannot parse, naming it.
    pub fn from_parts(parts: impl IntoIterator<Item = PartSource>) -> Result<Self, RenderError> {
        let mut tera = tera::Tera::new();
        tera.autoescape_on(vec![".html"]);
        let mut sources: BTreeMap<TemplateId, BTreeMap<Part, String>> = BTreeMap::new();
        for p in parts {
            if p.source.len() > PART_BYTES_MAX {
                return Err(RenderError::Limit {
                    id: p.template,
                    part: p.part.file_name(),
                    message: format!("source is larger than {PART_BYTES_MAX} bytes"),
                });
            }
            sources.entry(p.template).or_default().insert(p.part, p.source);
        }
        let mut templates = BTreeMap::new();
        for (id, parts) in sources {
            let mut hash = 0xcbf2_9ce4_8422_2325;
            for (part, source) in &parts {
                tera.add_raw_template(&tera_name(&id, *part), source).map_err(|e| {
                    RenderError::Template {
                        id: id.clone(),
                        part: part.file_name(),
                        message: tera_message(&e),
                    }
                })?;
                hash = fnv1a(part.file_name().bytes().chain([0]), hash);
                hash = fnv1a(source.bytes().chain([0]), hash);
            }
            let loaded =
                Loaded { version: format!("{hash:016x}"), parts: parts.into_keys().collect() };
            templates.insert(id, loaded);
        }
        Ok(Self { tera, templates })
    }

    /// The ids of the loaded templates.
    pub fn ids(&self) -> impl Iterator<Item = &TemplateId> {
        self.templates.keys()
    }

    /// Pins the current version of a template, for a notification being accepted.
    pub fn pin(&self, id: &TemplateId) -> Result<TemplateRef, RenderError> {
        let loaded =
            self.templates.get(id).ok_or_else(|| RenderError::UnknownTemplate(id.clone()))?;
        Ok(TemplateRef { id: id.clone(), version: loaded.version.clone() })
    }

    /// The channels a template has parts for.
    pub fn channels(&self, id: &TemplateId) -> Vec<Channel> {
        let mut channels: Vec<Channel> = self
            .templates
            .get(id)
            .map(|l| l.parts.iter().map(|p| p.channel()).collect())
            .unwrap_or_default();
        channels.dedup();
        channels
    }

    /// Renders a pinned template for a channel with `data`.
    pub fn render(
        &self,
        template: &TemplateRef,
        channel: Channel,
        data: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Content, RenderError> {
        let id = &template.id;
        let loaded =
            self.templates.get(id).ok_or_else(|| RenderError::UnknownTemplate(id.clone()))?;
        if loaded.version != template.version {
            return Err(RenderError::VersionGone {
                id: id.clone(),
                pinned: template.version.clone(),
                loaded: loaded.version.clone(),
            });
        }
        let context = tera::Context::from_serialize(data).map_err(|e| RenderError::Template {
            id: id.clone(),
            part: "data",
            message: tera_message(&e),
        })?;
        let has = |p: Part| loaded.parts.contains(&p);
        let render = |p: Part| -> Result<String, RenderError> {
            self.tera.render(&tera_name(id, p), &context).map_err(|e| RenderError::Template {
                id: id.clone(),
                part: p.file_name(),
                message: tera_message(&e),
            })
        };
        let no_channel = |needs| RenderError::NoChannel { id: id.clone(), channel, needs };
        let limit = |p: Part, message: String| RenderError::Limit {
            id: id.clone(),
            part: p.file_name(),
            message,
        };
        let content = match channel {
            Channel::Email => {
                if !has(Part::EmailSubject) || !(has(Part::EmailHtml) || has(Part::EmailText)) {
                    return Err(no_channel("email.subject and email.html or email.text"));
                }
                let subject = render(Part::EmailSubject)?.trim().to_owned();
                if subject.contains(['\r', '\n']) {
                    return Err(limit(Part::EmailSubject, "subject contains a line break".into()));
                }
                if subject.chars().count() > SUBJECT_CHARS_MAX {
                    let m = format!("subject is longer than {SUBJECT_CHARS_MAX} characters");
                    return Err(limit(Part::EmailSubject, m));
                }
                let html = has(Part::EmailHtml).then(|| render(Part::EmailHtml)).transpose()?;
                let text = has(Part::EmailText).then(|| render(Part::EmailText)).transpose()?;
                Content::Email { subject, html, text }
            }
            Channel::Sms => {
                if !has(Part::SmsBody) {
                    return Err(no_channel("sms.body"));
                }
                let body = render(Part::SmsBody)?.trim().to_owned();
                if body.chars().count() > SMS_CHARS_MAX {
                    let m = format!("SMS body is longer than {SMS_CHARS_MAX} characters");
                    return Err(limit(Part::SmsBody, m));
                }
                Content::Sms { body }
            }
            Channel::Push | Channel::InApp => {
                let (tp, bp) = if channel == Channel::Push {
                    (Part::PushTitle, Part::PushBody)
                } else {
                    (Part::InAppTitle, Part::InAppBody)
                };
                if !has(tp) || !has(bp) {
                    return Err(no_channel(if channel == Channel::Push {
                        "push.title and push.body"
                    } else {
                        "in_app.title and in_app.body"
                    }));
                }
                let title = render(tp)?.trim().to_owned();
                let body = render(bp)?.trim().to_owned();
                for (p, s) in [(tp, &title), (bp, &body)] {
                    if s.len() > PUSH_BYTES_MAX {
                        return Err(limit(p, format!("longer than {PUSH_BYTES_MAX} bytes")));
                    }
                }
                if channel == Channel::Push {
                    Content::Push { title, body }
                } else {
                    Content::InApp { title, body }
                }
            }
            Channel::Chat => {
                if !has(Part::ChatText) {
                    return Err(no_channel("chat.text"));
                }
                Content::Chat { text: render(Part::ChatText)?.trim().to_owned() }
            }
        };
        Ok(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set() -> TemplateSet {
        let id = TemplateId::new("welcome").unwrap();
        let part =
            |part, source: &str| PartSource { template: id.clone(), part, source: source.into() };
        TemplateSet::from_parts([
            part(Part::EmailSubject, "Welcome, {{ name }}"),
            part(Part::EmailHtml, "<p>Hello {{ name }}</p>"),
            part(Part::EmailText, "Hello {{ name }}"),
            part(Part::SmsBody, "Hi {{ name }}, code {{ code }}"),
        ])
        .unwrap()
    }

    fn data(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn renders_email_and_escapes_only_html() {
        let s = set();
        let pin = s.pin(&TemplateId::new("welcome").unwrap()).unwrap();
        let c = s.render(&pin, Channel::Email, &data(json!({"name": "<b>Ada</b>"}))).unwrap();
        assert_eq!(
            c,
            Content::Email {
                subject: "Welcome, <b>Ada</b>".into(),
                html: Some("<p>Hello &lt;b&gt;Ada&lt;/b&gt;</p>".into()),
                text: Some("Hello <b>Ada</b>".into()),
            }
        );
    }

    #[test]
    fn missing_variable_is_a_clear_error() {
        let s = set();
        let pin = s.pin(&TemplateId::new("welcome").unwrap()).unwrap();
        let err = s.render(&pin, Channel::Sms, &data(json!({"name": "Ada"}))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sms.body") && text.contains("code"), "{text}");
    }

    #[test]
    fn changed_version_is_refused() {
        let s = set();
        let mut pin = s.pin(&TemplateId::new("welcome").unwrap()).unwrap();
        pin.version = "0000".into();
        let err = s.render(&pin, Channel::Sms, &data(json!({"name": "A", "code": 1}))).unwrap_err();
        assert!(matches!(err, RenderError::VersionGone { .. }));
    }

    #[test]
    fn channel_without_parts_is_refused() {
        let s = set();
        let pin = s.pin(&TemplateId::new("welcome").unwrap()).unwrap();
        let err = s.render(&pin, Channel::Push, &data(json!({"name": "A"}))).unwrap_err();
        assert!(matches!(err, RenderError::NoChannel { channel: Channel::Push, .. }));
    }

    #[test]
    fn subject_line_break_is_refused() {
        let s = set();
        let pin = s.pin(&TemplateId::new("welcome").unwrap()).unwrap();
        let err =
            s.render(&pin, Channel::Email, &data(json!({"name": "A\r\nBcc: x"}))).unwrap_err();
        assert!(matches!(err, RenderError::Limit { part: "email.subject", .. }));
    }

    #[test]
    fn version_changes_with_content() {
        let a = set();
        let id = TemplateId::new("welcome").unwrap();
        let b = TemplateSet::from_parts([PartSource {
            template: id.clone(),
            part: Part::SmsBody,
            source: "other".into(),
        }])
        .unwrap();
        assert_ne!(a.pin(&id).unwrap().version, b.pin(&id).unwrap().version);
    }
}
