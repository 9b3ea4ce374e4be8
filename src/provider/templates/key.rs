//! `TemplateKey`: a key of `verification.templates`, a language tag or an E.164 prefix, told
//! apart once as the configuration is read, so that building the lookup tables checks nothing.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::phone::Prefix;

/// How a template is chosen for a recipient.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TemplateKey {
    /// A BCP 47-shaped tag as written (`zh-CN`), matched in any case against a browser's
    /// languages.
    Locale(String),
    /// Matched against the start of the number in E.164 form.
    Prefix(Prefix),
}

impl TemplateKey {
    /// The key as written in the configuration.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Locale(s) => s,
            Self::Prefix(p) => p.as_str(),
        }
    }
}

impl TryFrom<String> for TemplateKey {
    type Error = String;
    fn try_from(key: String) -> Result<TemplateKey, String> {
        if let Some(p) = Prefix::parse(&key) {
            Ok(Self::Prefix(p))
        } else if is_language_tag(&key) {
            Ok(Self::Locale(key))
        } else {
            Err(format!(
                "key {key:?} must be a language tag (\"zh-CN\", \"zh\") or an E.164 prefix (\"+86\")"
            ))
        }
    }
}

impl std::str::FromStr for TemplateKey {
    type Err = String;
    fn from_str(s: &str) -> Result<TemplateKey, String> {
        TemplateKey::try_from(s.to_owned())
    }
}

impl From<TemplateKey> for String {
    fn from(k: TemplateKey) -> String {
        match k {
            TemplateKey::Locale(s) => s,
            TemplateKey::Prefix(p) => p.into(),
        }
    }
}

impl fmt::Display for TemplateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A BCP 47-shaped tag: a 2–3 letter language, then `-`-separated alphanumeric subtags.
fn is_language_tag(key: &str) -> bool {
    let mut parts = key.split('-');
    let lang_ok = parts
        .next()
        .is_some_and(|l| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic()));
    lang_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_locales_or_prefixes() {
        for (good, prefix) in [
            ("zh", false),
            ("zh-CN", false),
            ("zh-Hant-TW", false),
            ("+1", true),
            ("+8613", true),
        ] {
            let key: TemplateKey = good.parse().unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(matches!(key, TemplateKey::Prefix(_)), prefix, "{good}");
            assert_eq!(key.as_str(), good, "kept as written");
        }
        for bad in [
            "86",
            "+",
            "+86a",
            "chinese",
            "z",
            "zh_CN",
            "*",
            "+1234567890123456",
        ] {
            let err = bad.parse::<TemplateKey>().unwrap_err();
            assert!(err.contains("language tag"), "{bad}: {err}");
        }
    }
}
