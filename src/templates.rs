//! Loading templates from a directory: one folder per template, one file per part
//! (`templates/welcome/email.subject`, `templates/welcome/sms.body`, ...). Reading files is I/O, so
//! it lives here in the shell; parsing and rendering are pure (`steps::render`).

use std::path::Path;

use anyhow::{Context as _, bail};
use steps::model::TemplateId;
use steps::render::{Part, PartSource, TemplateSet};

/// The most template folders loaded. A templates directory is hand-written; far more than this
/// means the path points somewhere else by mistake.
const TEMPLATES_MAX: usize = 10_000;

/// Loads every template folder under `dir`. Unknown file names are an error (a typo such as
/// `email.subjet` would otherwise silently drop a part).
pub fn load(dir: &Path) -> anyhow::Result<TemplateSet> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the templates directory {}", dir.display()))?;
    let mut parts = Vec::new();
    let mut folders = 0;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        folders += 1;
        if folders > TEMPLATES_MAX {
            bail!("{} holds more than {TEMPLATES_MAX} template folders", dir.display());
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let id = TemplateId::new(&name)
            .map_err(|reason| anyhow::anyhow!("template folder name '{name}' {reason}"))?;
        for file in std::fs::read_dir(entry.path())? {
            let file = file?;
            let file_name = file.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') {
                continue;
            }
            let Some(part) = Part::from_file_name(&file_name) else {
                let known: Vec<&str> = Part::ALL.iter().map(|p| p.file_name()).collect();
                bail!(
                    "unknown template part {}: expected one of {}",
                    file.path().display(),
                    known.join(", ")
                );
            };
            let source = std::fs::read_to_string(file.path())
                .with_context(|| format!("cannot read {}", file.path().display()))?;
            parts.push(PartSource { template: id.clone(), part, source });
        }
    }
    TemplateSet::from_parts(parts).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_shipped_templates() {
        let set = load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/templates"))).unwrap();
        let ids: Vec<&str> = set.ids().map(|i| i.as_str()).collect();
        assert_eq!(ids, vec!["order_shipped", "otp", "welcome"]);
    }

    #[test]
    fn unknown_part_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/email.subjet"), "x").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("email.subjet"), "{err}");
    }
}
