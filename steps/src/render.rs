//! Template rendering with tera 2.
//!
//! A template version ([`TemplateContent`]) holds parts per locale, one text per channel part
//! (`email.subject`, `email.html`, `email.text`, `sms.body`, `push.title`, `push.body`,
//! `in_app.title`, `in_app.body`, `in_app.action`, `chat.text`), and names its default locale.
//! [`CompiledTemplate::compile`] checks and parses a version once; rendering it is then pure and
//! cheap. Versions are immutable, so a compiled version can be cached by (tenant, id, version) for
//! as long as anyone likes. Where the text comes from (the templates directory, the per-tenant
//! registry) is the shell's business: this module only sees strings.
//!
//! Rendering picks a locale along the recipient's fallback chain (`fr-CA` → `fr` → the default
//! locale, [`Locale::chain`]): the first locale that has every part the channel needs. Tera 2
//! errors on undefined variables, which is what we want: a missing variable is a clear error at
//! submit time, never a broken message later. Only HTML parts are HTML-escaped. Each channel's
//! limits are checked on the rendered text: SMS segments (GSM-7/UCS-2, [`crate::sms`]) against
//! the policy's cap, push and in-app sizes in bytes, the in-app action's URL, the subject's line
//! breaks.
//!
//! # Templates evaluate nothing but their own syntax
//! Every part is first parsed into a tera instance of its own, holding nothing else:
//! `{% include %}`, `{% extends %}` and `{% import %}` find no other template (and tera 2 has no
//! file loader unless its `glob_fs` feature is on, which we do not enable), a component another
//! part defines is unknown; the only functions are tera 2's built-in `range` (replaced here by one
//! bounded to [`RANGE_LEN_MAX`] items) and `throw`; there is no `get_env`, `now` or `get_random`,
//! and no filter does I/O. A part that names anything else is refused when the template is
//! created. Only then are a version's parts compiled together into one instance (one per version,
//! not one per part, to keep cached versions small): a part that stood alone cannot reach its
//! siblings there either. A rendered part is written into a buffer capped at
//! [`RENDERED_BYTES_MAX`], so a loop cannot fill memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::locale::Locale;
use crate::model::{Channel, IdError, TemplateId, TemplateRef};
use crate::sms;

/// Largest template part accepted, in bytes. Templates are operator-authored; the cap keeps a
/// mistaken upload from turning every render into a memory hog.
pub const PART_BYTES_MAX: usize = 64 * 1024;
/// Largest output of one part while rendering, in bytes: far above every channel's limit, low
/// enough that a runaway loop stops before it hurts.
pub const RENDERED_BYTES_MAX: usize = 256 * 1024;
/// The most items tera's `range()` may produce here (tera's own bound is 100,000). A message
/// needs a handful; a large range is only good for burning CPU.
pub const RANGE_LEN_MAX: usize = 1_000;
/// The highest SMS segment cap a policy may set: ten concatenated segments is what providers
/// accept (Twilio refuses bodies over 1,600 characters).
pub const SMS_SEGMENTS_CEILING: u32 = 10;
/// The default SMS segment cap: six segments are 918 GSM-7 characters or 402 UCS-2 ones, a long
/// message already, and six times the price of one SMS.
pub const SMS_SEGMENTS_DEFAULT: u32 = 6;
/// Longest push title after rendering, in bytes. APNs and FCM allow 4 KiB for the whole payload;
/// the title and body limits leave room for the rest of it.
pub const PUSH_TITLE_BYTES_MAX: usize = 512;
/// Longest push body after rendering, in bytes.
pub const PUSH_BODY_BYTES_MAX: usize = 2_048;
/// Longest in-app title after rendering, in bytes.
pub const IN_APP_TITLE_BYTES_MAX: usize = 1_024;
/// Longest in-app body after rendering, in bytes (inboxes keep 500 entries per recipient).
pub const IN_APP_BODY_BYTES_MAX: usize = 4_096;
/// Longest in-app action (a URL or a deep link) after rendering, in bytes.
pub const ACTION_BYTES_MAX: usize = 2_048;
/// Longest email subject after rendering, in characters (RFC 5322's line length).
pub const SUBJECT_CHARS_MAX: usize = 998;
/// The most locales a policy may allow in one version.
pub const LOCALES_CEILING: usize = 200;
/// The default of [`Limits::locales_per_version_max`].
pub const LOCALES_DEFAULT: usize = 50;
/// The default locale of templates that do not say (built-ins without a `default_locale` file,
/// [`TemplateSet::from_parts`]).
pub const DEFAULT_LOCALE: &str = "en";

/// URL schemes an in-app action may never use: they run code or read local data in a web view.
const ACTION_SCHEMES_DENIED: [&str; 6] =
    ["javascript", "vbscript", "data", "file", "blob", "about"];

/// One part of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
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
    /// `in_app.action`: the URL or deep link the entry opens (optional).
    InAppAction,
    /// `chat.text`
    ChatText,
}

/// A part name that is not one of [`Part::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown template part '{0}': expected one of {known}", known = Part::names())]
pub struct UnknownPart(pub String);

impl Part {
    /// Every part, in name order.
    pub const ALL: [Part; 10] = [
        Part::EmailSubject,
        Part::EmailHtml,
        Part::EmailText,
        Part::SmsBody,
        Part::PushTitle,
        Part::PushBody,
        Part::InAppTitle,
        Part::InAppBody,
        Part::InAppAction,
        Part::ChatText,
    ];

    /// The part's name: its key in the API and its file name in the templates directory.
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
            Part::InAppAction => "in_app.action",
            Part::ChatText => "chat.text",
        }
    }

    /// Parses a part name.
    pub fn from_file_name(name: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.file_name() == name)
    }

    /// Every part name, comma-separated, for error messages.
    pub fn names() -> String {
        Part::ALL.map(Part::file_name).join(", ")
    }

    /// The channel the part belongs to.
    pub fn channel(self) -> Channel {
        match self {
            Part::EmailSubject | Part::EmailHtml | Part::EmailText => Channel::Email,
            Part::SmsBody => Channel::Sms,
            Part::PushTitle | Part::PushBody => Channel::Push,
            Part::InAppTitle | Part::InAppBody | Part::InAppAction => Channel::InApp,
            Part::ChatText => Channel::Chat,
        }
    }

    fn is_html(self) -> bool {
        matches!(self, Part::EmailHtml)
    }
}

impl TryFrom<String> for Part {
    type Error = UnknownPart;
    fn try_from(name: String) -> Result<Self, UnknownPart> {
        Part::from_file_name(&name).ok_or(UnknownPart(name))
    }
}

impl From<Part> for String {
    fn from(part: Part) -> String {
        part.file_name().to_owned()
    }
}

/// What a channel needs of a locale's parts, in words (for errors).
fn needs(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email.subject and email.html or email.text",
        Channel::Sms => "sms.body",
        Channel::Push => "push.title and push.body",
        Channel::InApp => "in_app.title and in_app.body",
        Channel::Chat => "chat.text",
    }
}

/// Whether `has` holds every part `channel` needs.
fn complete(channel: Channel, has: impl Fn(Part) -> bool) -> bool {
    match channel {
        Channel::Email => has(Part::EmailSubject) && (has(Part::EmailHtml) || has(Part::EmailText)),
        Channel::Sms => has(Part::SmsBody),
        Channel::Push => has(Part::PushTitle) && has(Part::PushBody),
        Channel::InApp => has(Part::InAppTitle) && has(Part::InAppBody),
        Channel::Chat => has(Part::ChatText),
    }
}

/// The source text of one template part, for [`TemplateSet::from_parts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSource {
    /// The template the part belongs to.
    pub template: TemplateId,
    /// Which part.
    pub part: Part,
    /// The tera source.
    pub source: String,
}

/// What one template version holds: parts per locale, and which locale is the default. Immutable
/// once stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateContent {
    /// The locale used when neither the recipient's locale nor its parents have the channel.
    /// Must be one of `locales`.
    pub default_locale: Locale,
    /// The parts of each locale, by part name.
    pub locales: BTreeMap<Locale, BTreeMap<Part, String>>,
}

impl TemplateContent {
    /// The channels the locale's parts are complete for.
    pub fn channels_of(parts: &BTreeMap<Part, String>) -> Vec<Channel> {
        Channel::ALL.into_iter().filter(|c| complete(*c, |p| parts.contains_key(&p))).collect()
    }

    /// The channels some locale is complete for.
    pub fn channels(&self) -> Vec<Channel> {
        Channel::ALL
            .into_iter()
            .filter(|c| self.locales.values().any(|parts| complete(*c, |p| parts.contains_key(&p))))
            .collect()
    }
}

/// The limits a template is checked against: the policy's (`workflows::policy::TemplatePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most SMS segments a rendered SMS may take (1..=[`SMS_SEGMENTS_CEILING`]).
    pub sms_segments_max: u32,
    /// Most locales one version may hold (1..=[`LOCALES_CEILING`]).
    pub locales_per_version_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { sms_segments_max: SMS_SEGMENTS_DEFAULT, locales_per_version_max: LOCALES_DEFAULT }
    }
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
        /// The URL or deep link the entry opens, checked by [`check_action`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<String>,
    },
    /// A chat message.
    Chat {
        /// The text.
        text: String,
    },
}

/// A rendered template: the content, the locale it was rendered in, and for SMS what it costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    /// The locale whose parts were used (after fallback).
    pub locale: Locale,
    /// The content.
    pub content: Content,
    /// The SMS encoding and segment count, for SMS.
    pub sms: Option<sms::Segments>,
}

/// Why a template could not be loaded or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// No template with this id exists (for this tenant, nor built in).
    #[error("template '{0}' does not exist")]
    UnknownTemplate(TemplateId),
    /// The pinned version is not the loaded one (a built-in template changed after acceptance).
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
    /// Tera rejected the data while rendering (missing variable, wrong type, ...).
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
    /// A template version's content is not acceptable: a part tera cannot parse (or that names a
    /// function, a filter or another template that does not exist), a locale with an incomplete
    /// channel, too many locales, a part too large.
    #[error("template '{id}' {field}: {message}")]
    Invalid {
        /// The template.
        id: TemplateId,
        /// Where, as a path into the content: `locales.fr.sms.body`, `default_locale`.
        field: String,
        /// What is wrong (tera's explanation for a part that does not parse).
        message: String,
    },
    /// The template exists but none of its versions is published.
    #[error("template '{0}' has no published version")]
    NotPublished(TemplateId),
    /// The template has no such version.
    #[error("template '{id}' has no version {version}")]
    UnknownVersion {
        /// The template.
        id: TemplateId,
        /// The version asked for.
        version: String,
    },
}

impl RenderError {
    /// The variable a render failed on, when tera said a variable is not defined: the name the
    /// API reports as the field (`data.<name>`).
    pub fn missing_variable(&self) -> Option<&str> {
        let RenderError::Template { message, .. } = self else { return None };
        let rest = &message[message.find("Variable `")? + "Variable `".len()..];
        let name = &rest[..rest.find('`')?];
        let after = &rest[name.len() + 1..];
        (after.starts_with(" is not defined") || after.starts_with(" exists but")).then_some(name)
    }
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

/// FNV-1a, 64 bit: a stable, dependency-free content hash for built-in template versions (not a
/// security boundary: it only tells two contents apart).
fn fnv1a(bytes: impl IntoIterator<Item = u8>, mut hash: u64) -> u64 {
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A built-in template's version: the hash of its content. A template with only its default
/// locale hashes its parts alone, as versions did before locales existed, so notifications
/// pinned then still render.
pub fn content_hash(content: &TemplateContent) -> String {
    let hash_parts = |parts: &BTreeMap<Part, String>, mut hash: u64| {
        for (part, source) in parts {
            hash = fnv1a(part.file_name().bytes().chain([0]), hash);
            hash = fnv1a(source.bytes().chain([0]), hash);
        }
        hash
    };
    let default = &content.default_locale;
    let mut hash = 0xcbf2_9ce4_8422_2325;
    if let Some(parts) = content.locales.get(default) {
        hash = hash_parts(parts, hash);
    }
    if content.locales.keys().any(|l| l != default) {
        hash = fnv1a(default.as_str().bytes().chain([0]), hash);
        for (locale, parts) in content.locales.iter().filter(|(l, _)| *l != default) {
            hash = fnv1a(locale.as_str().bytes().chain([0]), hash);
            hash = hash_parts(parts, hash);
        }
    }
    format!("{hash:016x}")
}

/// Checks an in-app action: an absolute URL (`https://…`, or an app's own scheme such as
/// `myapp://orders/1`) or an app-relative path (`/orders/1`), without whitespace or control
/// characters, at most [`ACTION_BYTES_MAX`] bytes, never a scheme that runs code or reads local
/// data (`javascript:`, `data:`, `file:`, ...).
pub fn check_action(action: &str) -> Result<(), String> {
    if action.is_empty() {
        return Err("the action is empty".into());
    }
    if action.len() > ACTION_BYTES_MAX {
        return Err(format!("the action is longer than {ACTION_BYTES_MAX} bytes"));
    }
    if action.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the action contains whitespace or a control character".into());
    }
    if action.starts_with('/') {
        if action.starts_with("//") {
            return Err("the action is a scheme-relative URL; give the scheme".into());
        }
        return Ok(());
    }
    let url = url::Url::parse(action).map_err(|e| {
        format!("the action must be an absolute URL or deep link, or a path starting with '/': {e}")
    })?;
    let scheme = url.scheme();
    if ACTION_SCHEMES_DENIED.contains(&scheme) {
        return Err(format!("the action's scheme '{scheme}:' is not allowed"));
    }
    if matches!(scheme, "http" | "https") && url.host().is_none() {
        return Err("the action's URL has no host".into());
    }
    Ok(())
}

/// tera's `range()`, bounded to [`RANGE_LEN_MAX`] items.
fn bounded_range(kwargs: tera::Kwargs, _: &tera::State) -> tera::TeraResult<Vec<i64>> {
    let start = kwargs.get::<i64>("start")?.unwrap_or(0);
    let end = kwargs.must_get::<i64>("end")?;
    let step = kwargs.get::<i64>("step_by")?.unwrap_or(1);
    if step == 0 {
        return Err(tera::Error::message("Function `range` was called with a `step_by` of 0"));
    }
    let span = i128::from(end) - i128::from(start);
    let len = if (span > 0) == (step > 0) { span / i128::from(step) } else { 0 };
    if len > RANGE_LEN_MAX as i128 {
        return Err(tera::Error::message(format!(
            "Function `range` would produce {len} items; templates may use at most {RANGE_LEN_MAX}"
        )));
    }
    let mut values = Vec::with_capacity(len as usize);
    let mut i = start;
    while (step > 0 && i < end) || (step < 0 && i > end) {
        values.push(i);
        i = i.saturating_add(step);
    }
    Ok(values)
}

/// An empty tera instance with our functions: autoescaping for `.html` names only, the bounded
/// `range`.
fn engine() -> tera::Tera {
    let mut tera = tera::Tera::new();
    tera.autoescape_on([".html"]);
    tera.register_function("range", bounded_range);
    tera
}

/// Parses one part alone (see the module doc): it must not name anything but its own syntax.
fn check_alone(name: &str, source: &str) -> Result<(), String> {
    engine().add_raw_template(name, source).map_err(|e| tera_message(&e))
}

/// The template name a part of a locale gets inside its version's tera instance. The suffix
/// decides autoescaping: only `.html` is escaped.
fn tera_name(locale: &Locale, part: Part) -> String {
    let ext = if part.is_html() { "html" } else { "txt" };
    format!("{locale}/{}.{ext}", part.file_name())
}

/// A buffer that refuses to grow past [`RENDERED_BYTES_MAX`].
struct Bounded {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > RENDERED_BYTES_MAX {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered part too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One template version, checked and parsed: ready to render in any of its locales.
pub struct CompiledTemplate {
    id: TemplateId,
    version: String,
    content: TemplateContent,
    /// Every part of every locale, named by [`tera_name`].
    tera: tera::Tera,
}

impl std::fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTemplate")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("locales", &self.content.locales.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl CompiledTemplate {
    /// Checks a version's content against `limits` and parses every part. Errors name the field
    /// (`locales.fr.sms.body`) and, for a part tera refuses, tera's explanation.
    pub fn compile(
        id: TemplateId,
        version: String,
        content: TemplateContent,
        limits: &Limits,
    ) -> Result<CompiledTemplate, RenderError> {
        let invalid = |field: String, message: String| RenderError::Invalid {
            id: id.clone(),
            field,
            message,
        };
        if content.locales.is_empty() {
            return Err(invalid("locales".into(), "at least one locale is needed".into()));
        }
        if content.locales.len() > limits.locales_per_version_max {
            let message = format!(
                "{} locales; a version may hold at most {}",
                content.locales.len(),
                limits.locales_per_version_max
            );
            return Err(invalid("locales".into(), message));
        }
        if !content.locales.contains_key(&content.default_locale) {
            let message = format!("'{}' has no parts under locales", content.default_locale);
            return Err(invalid("default_locale".into(), message));
        }
        let mut sources = Vec::new();
        for (locale, parts) in &content.locales {
            if parts.is_empty() {
                return Err(invalid(format!("locales.{locale}"), "has no parts".into()));
            }
            for (part, source) in parts {
                let field = format!("locales.{locale}.{}", part.file_name());
                let channel = part.channel();
                if !complete(channel, |p| parts.contains_key(&p)) {
                    let message = format!("{channel} needs {} in the same locale", needs(channel));
                    return Err(invalid(field, message));
                }
                if source.len() > PART_BYTES_MAX {
                    let message = format!("larger than {PART_BYTES_MAX} bytes");
                    return Err(invalid(field, message));
                }
                let name = tera_name(locale, *part);
                check_alone(&name, source).map_err(|m| invalid(field, m))?;
                sources.push((name, source.as_str()));
            }
        }
        let mut tera = engine();
        // Parts that parse alone parse together; what could still clash is two parts defining
        // a component of the same name.
        tera.add_raw_templates(sources).map_err(|e| invalid("locales".into(), tera_message(&e)))?;
        Ok(CompiledTemplate { id, version, content, tera })
    }

    /// The template's id.
    pub fn id(&self) -> &TemplateId {
        &self.id
    }

    /// The version (a registry version's number, a built-in's content hash).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What the version holds.
    pub fn content(&self) -> &TemplateContent {
        &self.content
    }

    /// What the version holds, giving up the compiled parts.
    pub fn into_content(self) -> TemplateContent {
        self.content
    }

    /// The reference a notification pins.
    pub fn pin(&self) -> TemplateRef {
        TemplateRef { id: self.id.clone(), version: self.version.clone() }
    }

    /// The channels some locale is complete for.
    pub fn channels(&self) -> Vec<Channel> {
        self.content.channels()
    }

    /// Renders the template for `channel` in the first locale of `locale`'s fallback chain that
    /// has the channel's parts, with `data`, and checks the channel's limits.
    pub fn render(
        &self,
        channel: Channel,
        locale: Option<&Locale>,
        data: &serde_json::Map<String, serde_json::Value>,
        limits: &Limits,
    ) -> Result<Rendered, RenderError> {
        let id = &self.id;
        let chain = Locale::chain(locale, &self.content.default_locale);
        let Some((locale, parts)) = chain.iter().find_map(|l| {
            let parts = self.content.locales.get(l)?;
            complete(channel, |p| parts.contains_key(&p)).then_some((l, parts))
        }) else {
            return Err(RenderError::NoChannel { id: id.clone(), channel, needs: needs(channel) });
        };
        let context = tera::Context::from_serialize(data).map_err(|e| RenderError::Template {
            id: id.clone(),
            part: "data",
            message: tera_message(&e),
        })?;
        let limit = |p: Part, message: String| RenderError::Limit {
            id: id.clone(),
            part: p.file_name(),
            message,
        };
        let has = |p: Part| parts.contains_key(&p);
        let render = |p: Part| -> Result<String, RenderError> {
            let mut out = Bounded { bytes: Vec::new(), overflowed: false };
            let rendered = self.tera.render_to(&tera_name(locale, p), &context, &mut out);
            if out.overflowed {
                return Err(limit(p, format!("renders to more than {RENDERED_BYTES_MAX} bytes")));
            }
            rendered.map_err(|e| RenderError::Template {
                id: id.clone(),
                part: p.file_name(),
                message: tera_message(&e),
            })?;
            String::from_utf8(out.bytes)
                .map_err(|_| limit(p, "renders to text that is not UTF-8".into()))
        };
        let bytes_max = |p: Part, text: &str, max: usize| -> Result<(), RenderError> {
            if text.len() > max {
                return Err(limit(p, format!("longer than {max} bytes after rendering")));
            }
            Ok(())
        };
        let not_empty = |p: Part, text: &str| -> Result<(), RenderError> {
            if text.is_empty() {
                return Err(limit(p, "empty after rendering".into()));
            }
            Ok(())
        };
        let mut sms = None;
        let content = match channel {
            Channel::Email => {
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
                let body = render(Part::SmsBody)?.trim().to_owned();
                not_empty(Part::SmsBody, &body)?;
                let counted = sms::segments(&body);
                if counted.segments > limits.sms_segments_max {
                    let encoding = match counted.encoding {
                        sms::Encoding::Gsm7 => "GSM-7",
                        sms::Encoding::Ucs2 => "UCS-2",
                    };
                    let m = format!(
                        "SMS body is {} segments ({} characters, {encoding}); the policy allows at \
                         most {}",
                        counted.segments, counted.characters, limits.sms_segments_max
                    );
                    return Err(limit(Part::SmsBody, m));
                }
                sms = Some(counted);
                Content::Sms { body }
            }
            Channel::Push => {
                let title = render(Part::PushTitle)?.trim().to_owned();
                let body = render(Part::PushBody)?.trim().to_owned();
                bytes_max(Part::PushTitle, &title, PUSH_TITLE_BYTES_MAX)?;
                bytes_max(Part::PushBody, &body, PUSH_BODY_BYTES_MAX)?;
                not_empty(Part::PushBody, &body)?;
                Content::Push { title, body }
            }
            Channel::InApp => {
                let title = render(Part::InAppTitle)?.trim().to_owned();
                let body = render(Part::InAppBody)?.trim().to_owned();
                bytes_max(Part::InAppTitle, &title, IN_APP_TITLE_BYTES_MAX)?;
                bytes_max(Part::InAppBody, &body, IN_APP_BODY_BYTES_MAX)?;
                not_empty(Part::InAppBody, &body)?;
                let action =
                    has(Part::InAppAction).then(|| render(Part::InAppAction)).transpose()?;
                let action = action.map(|a| a.trim().to_owned());
                if let Some(action) = &action {
                    check_action(action).map_err(|m| limit(Part::InAppAction, m))?;
                }
                Content::InApp { title, body, action }
            }
            Channel::Chat => {
                let text = render(Part::ChatText)?.trim().to_owned();
                not_empty(Part::ChatText, &text)?;
                Content::Chat { text }
            }
        };
        Ok(Rendered { locale: locale.clone(), content, sms })
    }
}

/// The built-in templates (the templates directory): every tenant sees them, each with one
/// version, the hash of its content.
pub struct TemplateSet {
    templates: BTreeMap<TemplateId, Arc<CompiledTemplate>>,
}

impl std::fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateSet").field("templates", &self.templates).finish()
    }
}

impl TemplateSet {
    /// No templates.
    pub fn empty() -> Self {
        Self { templates: BTreeMap::new() }
    }

    /// Loads parts of the default locale ([`DEFAULT_LOCALE`]) into a set. Fails on the first
    /// part that does not compile, naming it.
    pub fn from_parts(parts: impl IntoIterator<Item = PartSource>) -> Result<Self, RenderError> {
        let default = Locale::parse(DEFAULT_LOCALE).unwrap_or_else(|_| unreachable!("valid"));
        let mut contents: BTreeMap<TemplateId, TemplateContent> = BTreeMap::new();
        for p in parts {
            let content = contents.entry(p.template).or_insert_with(|| TemplateContent {
                default_locale: default.clone(),
                locales: BTreeMap::new(),
            });
            content.locales.entry(default.clone()).or_default().insert(p.part, p.source);
        }
        Self::from_contents(contents)
    }

    /// Loads whole template contents (each with its locales) into a set. Built-ins are the
    /// operator's own files: they may hold up to [`LOCALES_CEILING`] locales.
    pub fn from_contents(
        contents: impl IntoIterator<Item = (TemplateId, TemplateContent)>,
    ) -> Result<Self, RenderError> {
        let limits = Limits { locales_per_version_max: LOCALES_CEILING, ..Limits::default() };
        let mut templates = BTreeMap::new();
        for (id, content) in contents {
            let version = content_hash(&content);
            let compiled = CompiledTemplate::compile(id.clone(), version, content, &limits)?;
            templates.insert(id, Arc::new(compiled));
        }
        Ok(Self { templates })
    }

    /// The ids of the loaded templates.
    pub fn ids(&self) -> impl Iterator<Item = &TemplateId> {
        self.templates.keys()
    }

    /// A template by id.
    pub fn get(&self, id: &TemplateId) -> Option<&Arc<CompiledTemplate>> {
        self.templates.get(id)
    }

    /// Pins the current version of a template, for a notification being accepted.
    pub fn pin(&self, id: &TemplateId) -> Result<TemplateRef, RenderError> {
        let compiled = self.get(id).ok_or_else(|| RenderError::UnknownTemplate(id.clone()))?;
        Ok(compiled.pin())
    }

    /// The pinned version, or why it is not loaded.
    pub fn compiled(&self, template: &TemplateRef) -> Result<&Arc<CompiledTemplate>, RenderError> {
        let id = &template.id;
        let compiled = self.get(id).ok_or_else(|| RenderError::UnknownTemplate(id.clone()))?;
        if compiled.version() != template.version {
            return Err(RenderError::VersionGone {
                id: id.clone(),
                pinned: template.version.clone(),
                loaded: compiled.version().to_owned(),
            });
        }
        Ok(compiled)
    }

    /// The channels a template has parts for.
    pub fn channels(&self, id: &TemplateId) -> Vec<Channel> {
        self.get(id).map(|c| c.channels()).unwrap_or_default()
    }

    /// Renders a pinned template for a channel with `data`, in its default locale and under the
    /// default limits.
    pub fn render(
        &self,
        template: &TemplateRef,
        channel: Channel,
        data: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Content, RenderError> {
        let rendered = self.compiled(template)?.render(channel, None, data, &Limits::default())?;
        Ok(rendered.content)
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

    fn l(s: &str) -> Locale {
        Locale::parse(s).unwrap()
    }

    fn id() -> TemplateId {
        TemplateId::new("t").unwrap()
    }

    /// Compiles a version from `(locale, part, source)` triples, `default` its default locale.
    fn compile(
        default: &str,
        parts: &[(&str, Part, &str)],
    ) -> Result<CompiledTemplate, RenderError> {
        let mut locales: BTreeMap<Locale, BTreeMap<Part, String>> = BTreeMap::new();
        for (locale, part, source) in parts {
            locales.entry(l(locale)).or_default().insert(*part, (*source).to_owned());
        }
        let content = TemplateContent { default_locale: l(default), locales };
        CompiledTemplate::compile(id(), "1".into(), content, &Limits::default())
    }

    fn sms_body(source: &str) -> CompiledTemplate {
        compile("en", &[("en", Part::SmsBody, source)]).unwrap()
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
    fn missing_variable_is_a_clear_error_that_names_it() {
        let s = set();
        let pin = s.pin(&TemplateId::new("welcome").unwrap()).unwrap();
        let err = s.render(&pin, Channel::Sms, &data(json!({"name": "Ada"}))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sms.body") && text.contains("code"), "{text}");
        assert_eq!(err.missing_variable(), Some("code"));
        // Other errors name no variable.
        let err = sms_body("{{ name | nth(n=1) }}").render(
            Channel::Sms,
            None,
            &data(json!({"name": 3})),
            &Limits::default(),
        );
        assert_eq!(err.unwrap_err().missing_variable(), None);
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
    fn version_changes_with_content_and_keeps_its_pre_locale_value() {
        let a = set();
        let id = TemplateId::new("welcome").unwrap();
        let b = TemplateSet::from_parts([PartSource {
            template: id.clone(),
            part: Part::SmsBody,
            source: "other".into(),
        }])
        .unwrap();
        assert_ne!(a.pin(&id).unwrap().version, b.pin(&id).unwrap().version);
        // The hash of one part, as versions were computed before locales: FNV-1a over
        // "sms.body\0other\0".
        let expected = fnv1a("sms.body\0other\0".bytes(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(b.pin(&id).unwrap().version, format!("{expected:016x}"));
        // Another locale changes it.
        let mut content = b.get(&id).unwrap().content().clone();
        content.locales.insert(l("fr"), BTreeMap::from([(Part::SmsBody, "autre".into())]));
        assert_ne!(content_hash(&content), b.pin(&id).unwrap().version);
    }

    #[test]
    fn part_names_are_the_wire_and_file_names() {
        assert_eq!(serde_json::to_string(&Part::InAppAction).unwrap(), "\"in_app.action\"");
        let parts: BTreeMap<Part, String> =
            serde_json::from_value(json!({"sms.body": "x", "email.subject": "y"})).unwrap();
        assert_eq!(parts.keys().copied().collect::<Vec<_>>(), [Part::EmailSubject, Part::SmsBody]);
        let err = serde_json::from_value::<BTreeMap<Part, String>>(json!({"sms.txt": "x"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown template part 'sms.txt'") && err.contains("in_app.action"));
    }

    #[test]
    fn locales_fall_back_from_region_to_language_to_the_default() {
        let t = compile(
            "en",
            &[
                ("en", Part::SmsBody, "Hello {{ name }}"),
                ("en", Part::EmailSubject, "Hello"),
                ("en", Part::EmailText, "Hello {{ name }}"),
                ("fr", Part::SmsBody, "Bonjour {{ name }}"),
                ("fr-CA", Part::SmsBody, "Allô {{ name }}"),
            ],
        )
        .unwrap();
        let d = data(json!({"name": "Ada"}));
        let render = |channel, locale: Option<&str>| {
            let r = t.render(channel, locale.map(l).as_ref(), &d, &Limits::default()).unwrap();
            let text = match r.content {
                Content::Sms { body } => body,
                Content::Email { text, .. } => text.unwrap(),
                other => panic!("{other:?}"),
            };
            (r.locale.to_string(), text)
        };
        assert_eq!(render(Channel::Sms, Some("fr-CA")), ("fr-CA".into(), "Allô Ada".into()));
        assert_eq!(render(Channel::Sms, Some("fr-FR")), ("fr".into(), "Bonjour Ada".into()));
        assert_eq!(render(Channel::Sms, Some("fr")), ("fr".into(), "Bonjour Ada".into()));
        assert_eq!(render(Channel::Sms, Some("de-DE")), ("en".into(), "Hello Ada".into()));
        assert_eq!(render(Channel::Sms, None), ("en".into(), "Hello Ada".into()));
        // French has no email: the whole email comes from the default locale, never a mix.
        assert_eq!(render(Channel::Email, Some("fr-CA")), ("en".into(), "Hello Ada".into()));
    }

    #[test]
    fn a_default_locale_without_the_channel_is_no_channel() {
        let t = compile("en", &[("en", Part::ChatText, "hi"), ("fr", Part::SmsBody, "Bonjour")])
            .unwrap();
        let err = t.render(Channel::Sms, Some(&l("de")), &Map::new(), &Limits::default());
        assert!(matches!(err, Err(RenderError::NoChannel { channel: Channel::Sms, .. })));
        let ok = t.render(Channel::Sms, Some(&l("fr-BE")), &Map::new(), &Limits::default());
        assert_eq!(ok.unwrap().locale, l("fr"));
    }

    type Map = serde_json::Map<String, serde_json::Value>;

    #[test]
    fn content_is_checked_and_errors_name_the_field() {
        let field = |r: Result<CompiledTemplate, RenderError>| match r {
            Err(RenderError::Invalid { field, message, .. }) => (field, message),
            other => panic!("{other:?}"),
        };
        let (f, m) = field(compile("en", &[("en", Part::SmsBody, "Hi {{ name")]));
        assert_eq!(f, "locales.en.sms.body");
        assert!(!m.is_empty(), "tera's explanation is passed on");
        let (f, _) = field(compile("de", &[("en", Part::SmsBody, "Hi")]));
        assert_eq!(f, "default_locale");
        let (f, m) = field(compile("en", &[("en", Part::EmailHtml, "<p>Hi</p>")]));
        assert_eq!(f, "locales.en.email.html");
        assert!(m.contains("email.subject"), "{m}");
        let (f, _) = field(compile(
            "en",
            &[("en", Part::SmsBody, "Hi"), ("fr", Part::InAppAction, "https://x.example")],
        ));
        assert_eq!(f, "locales.fr.in_app.action");
        let big = "x".repeat(PART_BYTES_MAX + 1);
        let (f, m) = field(compile("en", &[("en", Part::SmsBody, &big)]));
        assert_eq!((f.as_str(), m.contains("bytes")), ("locales.en.sms.body", true));
        let content = TemplateContent { default_locale: l("en"), locales: BTreeMap::new() };
        let (f, _) =
            field(CompiledTemplate::compile(id(), "1".into(), content, &Limits::default()));
        assert_eq!(f, "locales");
    }

    #[test]
    fn the_locale_count_is_limited() {
        let mut locales = BTreeMap::new();
        for n in 0..3 {
            let tag = format!("x{}", ["a", "b", "c"][n]);
            locales.insert(l(&tag), BTreeMap::from([(Part::SmsBody, "hi".to_owned())]));
        }
        let content = TemplateContent { default_locale: l("xa"), locales };
        let two = Limits { locales_per_version_max: 2, ..Limits::default() };
        let err = CompiledTemplate::compile(id(), "1".into(), content.clone(), &two).unwrap_err();
        assert!(err.to_string().contains("at most 2"), "{err}");
        let three = Limits { locales_per_version_max: 3, ..Limits::default() };
        assert!(CompiledTemplate::compile(id(), "1".into(), content, &three).is_ok());
    }

    #[test]
    fn templates_cannot_reach_other_templates_the_environment_or_functions() {
        for source in [
            "{% include \"sms.body.txt\" %}",
            "{% include \"email.subject.txt\" %}",
            "{% include \"welcome/sms.body.txt\" %}",
            "{% extends \"base.html\" %}",
            "{% import \"macros.html\" as m %}",
            "{{ get_env(name=\"HOME\") }}",
            "{{ get_env(name=\"REDIS_URL\", default=\"\") }}",
            "{{ now() }}",
            "{{ get_random(end=10) }}",
            "{{ read_file(path=\"/etc/passwd\") }}",
            "{{ \"x\" | filesizeformat }}",
        ] {
            let err = compile(
                "en",
                &[
                    ("en", Part::SmsBody, source),
                    ("en", Part::EmailSubject, "s"),
                    ("en", Part::EmailText, "t"),
                ],
            )
            .map(|_| ())
            .expect_err(source);
            assert!(
                matches!(&err, RenderError::Invalid { field, .. } if field == "locales.en.sms.body"),
                "{source}: {err}"
            );
        }
    }

    #[test]
    fn a_part_cannot_reach_its_siblings_once_compiled_together() {
        // The names the parts have inside the version's tera instance.
        for source in [
            "{% include \"en/email.subject.txt\" %}",
            "{% include \"fr/sms.body.txt\" %}",
            "{% extends \"en/email.html.html\" %}",
        ] {
            let err = compile(
                "en",
                &[
                    ("en", Part::SmsBody, source),
                    ("en", Part::EmailSubject, "secret subject"),
                    ("en", Part::EmailHtml, "<p>secret</p>"),
                    ("fr", Part::SmsBody, "secret fr"),
                ],
            )
            .map(|_| ())
            .expect_err(source);
            assert!(
                matches!(&err, RenderError::Invalid { field, .. } if field == "locales.en.sms.body"),
                "{source}: {err}"
            );
        }
    }

    #[test]
    fn the_only_functions_are_pure_and_bounded() {
        let d = Map::new();
        let render = |source: &str| {
            sms_body(source).render(Channel::Sms, None, &d, &Limits::default()).map(|r| r.content)
        };
        assert_eq!(
            render("{% for i in range(end=3) %}{{ i }}{% endfor %}").unwrap(),
            Content::Sms { body: "012".into() }
        );
        let err = render("{% for i in range(end=100000) %}x{% endfor %}").unwrap_err();
        assert!(err.to_string().contains("at most 1000"), "{err}");
        let err = render("{{ throw(message=\"no\") }}").unwrap_err();
        assert!(matches!(err, RenderError::Template { .. }), "{err}");
        // Nested loops that would print megabytes stop at the output cap.
        let err = render(
            "{% for a in range(end=1000) %}{% for b in range(end=1000) %}xxxxxxxxxx{% endfor %}{% endfor %}",
        )
        .unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn sms_segments_are_capped_by_the_policy() {
        let t = sms_body("{{ text }}");
        let render = |text: String, max: u32| {
            let limits = Limits { sms_segments_max: max, ..Limits::default() };
            t.render(Channel::Sms, None, &data(json!({ "text": text })), &limits)
        };
        let ok = render("a".repeat(306), 2).unwrap();
        let counted = ok.sms.unwrap();
        assert_eq!((counted.segments, counted.encoding), (2, sms::Encoding::Gsm7));
        let err = render("a".repeat(307), 2).unwrap_err();
        assert!(err.to_string().contains("3 segments") && err.to_string().contains("at most 2"));
        // One emoji turns 140 characters into three UCS-2 segments.
        let err = render(format!("{}😀", "a".repeat(138)), 2).unwrap_err();
        assert!(err.to_string().contains("UCS-2"), "{err}");
        let err = render(String::new(), 2).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn push_and_in_app_limits_and_the_action() {
        let t = compile(
            "en",
            &[
                ("en", Part::PushTitle, "{{ title }}"),
                ("en", Part::PushBody, "{{ body }}"),
                ("en", Part::InAppTitle, "{{ title }}"),
                ("en", Part::InAppBody, "{{ body }}"),
                ("en", Part::InAppAction, "{{ action }}"),
            ],
        )
        .unwrap();
        let render = |channel, title: &str, body: &str, action: &str| {
            let d = data(json!({"title": title, "body": body, "action": action}));
            t.render(channel, None, &d, &Limits::default()).map(|r| r.content)
        };
        let ok = render(Channel::InApp, "T", "B", "https://shop.example/orders/1").unwrap();
        assert_eq!(
            ok,
            Content::InApp {
                title: "T".into(),
                body: "B".into(),
                action: Some("https://shop.example/orders/1".into())
            }
        );
        for good in ["myapp://orders/1", "/orders/1?tab=items", "mailto:help@shop.example"] {
            assert!(render(Channel::InApp, "T", "B", good).is_ok(), "{good}");
        }
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,<script>",
            "file:///etc/passwd",
            "//evil.example/x",
            "orders/1",
            "https://",
            "https://shop.example/a b",
        ] {
            let err = render(Channel::InApp, "T", "B", bad).unwrap_err();
            assert!(
                matches!(err, RenderError::Limit { part: "in_app.action", .. }),
                "{bad}: {err}"
            );
        }
        let long = "é".repeat(PUSH_TITLE_BYTES_MAX / 2 + 1);
        let err = render(Channel::Push, &long, "B", "/").unwrap_err();
        assert!(matches!(err, RenderError::Limit { part: "push.title", .. }), "{err}");
        assert!(render(Channel::Push, &"é".repeat(PUSH_TITLE_BYTES_MAX / 2), "B", "/").is_ok());
        let err =
            render(Channel::Push, "T", &"x".repeat(PUSH_BODY_BYTES_MAX + 1), "/").unwrap_err();
        assert!(matches!(err, RenderError::Limit { part: "push.body", .. }), "{err}");
        let err =
            render(Channel::InApp, "T", &"x".repeat(IN_APP_BODY_BYTES_MAX + 1), "/").unwrap_err();
        assert!(matches!(err, RenderError::Limit { part: "in_app.body", .. }), "{err}");
        // An HTML-looking title is not escaped outside HTML parts.
        let ok = render(Channel::Push, "<b>1 & 2</b>", "B", "/").unwrap();
        assert_eq!(ok, Content::Push { title: "<b>1 & 2</b>".into(), body: "B".into() });
    }
}
