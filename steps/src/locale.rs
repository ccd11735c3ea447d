//! Locales: a recipient's language tag and the fallback chain a template version is searched
//! along.
//!
//! Tags follow BCP 47's shape (RFC 5646) loosely: a 2-3 letter language, then subtags of 1-8
//! letters or digits (`fr`, `fr-CA`, `zh-Hant-TW`, `es-419`). `_` is accepted for `-` (Android and
//! Java write `fr_CA`). Tags are normalised on parsing (`FR-ca` → `fr-CA`: language lower case,
//! script title case, region upper case), so two spellings of one locale are equal.
//!
//! Fallback is RFC 4647's *lookup*: drop the last subtag until something matches (`fr-CA` → `fr`),
//! and then the template's default locale.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest tag accepted (RFC 5646 recommends supporting at least 35 characters).
pub const LOCALE_LEN_MAX: usize = 35;

/// Why a locale tag was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocaleError {
    /// Empty, too long, or not shaped like a language tag.
    #[error(
        "must be a language tag such as 'fr' or 'fr-CA': a 2-3 letter language, then subtags of \
         1-8 letters or digits separated by '-', at most {LOCALE_LEN_MAX} characters"
    )]
    Malformed,
}

/// A normalised language tag (`en`, `fr-CA`, `zh-Hant-TW`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Locale(String);

impl Locale {
    /// Parses and normalises a tag.
    pub fn parse(s: &str) -> Result<Locale, LocaleError> {
        if s.is_empty() || s.len() > LOCALE_LEN_MAX {
            return Err(LocaleError::Malformed);
        }
        let mut out = String::with_capacity(s.len());
        // After a singleton (`u`, `x`, ...) come extensions, which are lower case throughout.
        let mut extension = false;
        for (i, subtag) in s.split(['-', '_']).enumerate() {
            let ok = !subtag.is_empty()
                && subtag.len() <= 8
                && subtag.bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok {
                return Err(LocaleError::Malformed);
            }
            let alpha = subtag.bytes().all(|b| b.is_ascii_alphabetic());
            if i == 0 {
                if !alpha || !(2..=3).contains(&subtag.len()) {
                    return Err(LocaleError::Malformed);
                }
                out.push_str(&subtag.to_ascii_lowercase());
                continue;
            }
            out.push('-');
            extension |= subtag.len() == 1;
            match (subtag.len(), alpha && !extension) {
                // A region: `CA`, `BR`.
                (2, true) => out.push_str(&subtag.to_ascii_uppercase()),
                // A script: `Hant`, `Latn`.
                (4, true) => {
                    let lower = subtag.to_ascii_lowercase();
                    out.push_str(&lower[..1].to_ascii_uppercase());
                    out.push_str(&lower[1..]);
                }
                _ => out.push_str(&subtag.to_ascii_lowercase()),
            }
        }
        Ok(Locale(out))
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag with its last subtag dropped (and a singleton left dangling by that, such as the
    /// `u` of `en-u-ca`), or `None` for a bare language.
    pub fn parent(&self) -> Option<Locale> {
        let mut tag = self.0.rsplit_once('-')?.0;
        if let Some((rest, last)) = tag.rsplit_once('-')
            && last.len() == 1
        {
            tag = rest;
        }
        Some(Locale(tag.to_owned()))
    }

    /// The lookup chain for a requested locale: itself, each parent, then `default` (once).
    /// `None` asks for the default alone.
    pub fn chain(requested: Option<&Locale>, default: &Locale) -> Vec<Locale> {
        let mut chain = Vec::new();
        let mut next = requested.cloned();
        while let Some(locale) = next {
            next = locale.parent();
            chain.push(locale);
        }
        if !chain.contains(default) {
            chain.push(default.clone());
        }
        chain
    }
}

impl TryFrom<String> for Locale {
    type Error = LocaleError;
    fn try_from(s: String) -> Result<Self, LocaleError> {
        Locale::parse(&s)
    }
}

impl From<Locale> for String {
    fn from(locale: Locale) -> String {
        locale.0
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> Locale {
        Locale::parse(s).unwrap()
    }

    #[test]
    fn tags_are_normalised() {
        assert_eq!(l("FR-ca").as_str(), "fr-CA");
        assert_eq!(l("fr_CA"), l("fr-CA"));
        assert_eq!(l("zh-hant-tw").as_str(), "zh-Hant-TW");
        assert_eq!(l("es-419").as_str(), "es-419");
        assert_eq!(l("EN").as_str(), "en");
        assert_eq!(l("en-US-u-CA-gregory").as_str(), "en-US-u-ca-gregory");
        let json: Locale = serde_json::from_str("\"pt_br\"").unwrap();
        assert_eq!(json.as_str(), "pt-BR");
    }

    #[test]
    fn malformed_tags_are_refused() {
        for bad in
            ["", "f", "fran", "1a", "fr-", "-fr", "fr--CA", "fr-CA!", "fr-abcdefghi", "fr CA"]
        {
            assert_eq!(Locale::parse(bad), Err(LocaleError::Malformed), "{bad:?}");
        }
        assert!(Locale::parse(&format!("en{}", "-abcdefg".repeat(5))).is_err());
        let err = serde_json::from_str::<Locale>("\"x\"").unwrap_err().to_string();
        assert!(err.contains("language tag"), "{err}");
    }

    #[test]
    fn the_chain_drops_subtags_then_falls_back_to_the_default() {
        let chain = |requested: Option<&str>, default: &str| -> Vec<String> {
            Locale::chain(requested.map(l).as_ref(), &l(default))
                .into_iter()
                .map(String::from)
                .collect()
        };
        assert_eq!(chain(Some("fr-CA"), "en"), ["fr-CA", "fr", "en"]);
        assert_eq!(chain(Some("zh-Hant-TW"), "en"), ["zh-Hant-TW", "zh-Hant", "zh", "en"]);
        assert_eq!(chain(Some("en-GB"), "en"), ["en-GB", "en"], "the default is not repeated");
        assert_eq!(chain(None, "de"), ["de"]);
        // A singleton left at the end is dropped with the subtag after it.
        assert_eq!(chain(Some("en-u-ca"), "fr"), ["en-u-ca", "en", "fr"]);
    }
}
