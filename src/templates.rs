//! Loading the built-in templates from a directory. Reading files is I/O, so it lives here in the
//! shell; checking, parsing and rendering are pure (`steps::render`).
//!
//! One folder per template, one file per part, a sub-folder per extra locale:
//!
//! ```text
//! templates/welcome/email.subject       the default locale's parts
//! templates/welcome/sms.body
//! templates/welcome/fr/email.subject    French
//! templates/welcome/fr-CA/sms.body      Canadian French (falls back to fr, then the default)
//! templates/welcome/default_locale      optional: the default locale's tag (else `en`)
//! ```
//!
//! These are the built-in templates: every tenant sees them, read-only, under their folder's name,
//! each with one version (the hash of its content), unless the tenant's registry has a template of
//! the same id. Editing a file changes the version at the next start; notifications pinned to the
//! old one then fail to render (`VersionGone`) rather than send a text they were not accepted with.
//! Templates that change should live in the registry (`POST /v1/templates`), whose versions stay.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use steps::locale::Locale;
use steps::model::TemplateId;
use steps::render::{DEFAULT_LOCALE, Part, TemplateContent, TemplateSet};

/// The most template folders loaded. A templates directory is hand-written; far more than this
/// means the path points somewhere else by mistake.
const TEMPLATES_MAX: usize = 10_000;
/// The file naming the default locale of a template's top-level parts.
const DEFAULT_LOCALE_FILE: &str = "default_locale";

/// Reads the part files of one folder (one locale). Unknown file names are an error (a typo such
/// as `email.subjet` would otherwise silently drop a part); `default_locale` and dot files are
/// skipped, sub-folders are returned for the caller.
fn read_parts(
    dir: &Path,
    parts: &mut BTreeMap<Part, String>,
) -> anyhow::Result<Vec<std::fs::DirEntry>> {
    let mut folders = Vec::new();
    for file in std::fs::read_dir(dir)? {
        let file = file?;
        let file_name = file.file_name().to_string_lossy().into_owned();
        if file_name.starts_with('.') || file_name == DEFAULT_LOCALE_FILE {
            continue;
        }
        if file.file_type()?.is_dir() {
            folders.push(file);
            continue;
        }
        let Some(part) = Part::from_file_name(&file_name) else {
            bail!(
                "unknown template part {}: expected one of {}, a locale folder or {DEFAULT_LOCALE_FILE}",
                file.path().display(),
                Part::names()
            );
        };
        let source = std::fs::read_to_string(file.path())
            .with_context(|| format!("cannot read {}", file.path().display()))?;
        parts.insert(part, source);
    }
    Ok(folders)
}

/// Reads one template folder.
fn read_template(dir: &Path) -> anyhow::Result<TemplateContent> {
    let default_file = dir.join(DEFAULT_LOCALE_FILE);
    let default_locale = if default_file.exists() {
        let tag = std::fs::read_to_string(&default_file)
            .with_context(|| format!("cannot read {}", default_file.display()))?;
        Locale::parse(tag.trim())
            .map_err(|e| anyhow::anyhow!("{}: '{}' {e}", default_file.display(), tag.trim()))?
    } else {
        Locale::parse(DEFAULT_LOCALE).unwrap_or_else(|_| unreachable!("a valid literal tag"))
    };
    let mut locales = BTreeMap::new();
    let mut root = BTreeMap::new();
    let folders = read_parts(dir, &mut root)?;
    if !root.is_empty() {
        locales.insert(default_locale.clone(), root);
    }
    for folder in folders {
        let name = folder.file_name().to_string_lossy().into_owned();
        let locale = Locale::parse(&name).map_err(|e| {
            anyhow::anyhow!("{}: a locale folder's name {e}", folder.path().display())
        })?;
        if locales.contains_key(&locale) {
            bail!(
                "{}: locale {locale} is given twice (the top-level files are {default_locale})",
                folder.path().display()
            );
        }
        let mut parts = BTreeMap::new();
        let nested = read_parts(&folder.path(), &mut parts)?;
        if let Some(nested) = nested.first() {
            bail!("{}: locale folders hold part files only", nested.path().display());
        }
        locales.insert(locale, parts);
    }
    Ok(TemplateContent { default_locale, locales })
}

/// Loads every template folder under `dir` as the built-in templates.
pub fn load(dir: &Path) -> anyhow::Result<TemplateSet> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the templates directory {}", dir.display()))?;
    let mut contents = BTreeMap::new();
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if contents.len() >= TEMPLATES_MAX {
            bail!("{} holds more than {TEMPLATES_MAX} template folders", dir.display());
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let id = TemplateId::new(&name)
            .map_err(|reason| anyhow::anyhow!("template folder name '{name}' {reason}"))?;
        contents.insert(id, read_template(&entry.path())?);
    }
    TemplateSet::from_contents(contents).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use steps::model::Channel;
    use steps::render::{Content, Limits};

    fn write(dir: &Path, path: &str, text: &str) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn loads_the_shipped_templates() {
        let set = load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"))).unwrap();
        let ids: Vec<&str> = set.ids().map(|i| i.as_str()).collect();
        assert_eq!(ids, vec!["order_shipped", "otp", "welcome"]);
    }

    #[test]
    fn unknown_part_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "t/email.subjet", "x");
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("email.subjet"), "{err}");
    }

    #[test]
    fn locale_folders_and_the_default_locale_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "t/default_locale", "de\n");
        write(dir.path(), "t/sms.body", "Hallo {{ name }}");
        write(dir.path(), "t/fr/sms.body", "Bonjour {{ name }}");
        write(dir.path(), "t/fr-CA/sms.body", "Allô {{ name }}");
        let set = load(dir.path()).unwrap();
        let t = set.get(&TemplateId::new("t").unwrap()).unwrap();
        let data = serde_json::json!({"name": "Ada"}).as_object().unwrap().clone();
        let body = |locale: Option<&str>| {
            let locale = locale.map(|l| Locale::parse(l).unwrap());
            match t.render(Channel::Sms, locale.as_ref(), &data, &Limits::default()) {
                Ok(r) => match r.content {
                    Content::Sms { body } => body,
                    other => panic!("{other:?}"),
                },
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(body(Some("fr-CA")), "Allô Ada");
        assert_eq!(body(Some("fr-BE")), "Bonjour Ada");
        assert_eq!(body(Some("en-US")), "Hallo Ada");
        assert_eq!(body(None), "Hallo Ada");
    }

    #[test]
    fn bad_locale_folders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "t/sms.body", "Hi");
        write(dir.path(), "t/not a locale/sms.body", "Hi");
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a locale") && err.contains("language tag"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "t/sms.body", "Hi");
        write(dir.path(), "t/en/sms.body", "Hi again");
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("given twice"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "t/sms.body", "Hi {{ name");
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("locales.en.sms.body"), "{err}");
    }
}
