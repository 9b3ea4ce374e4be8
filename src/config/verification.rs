//! `[verification]`: codes (length, alphabet, lifetime, attempts), message texts, which numbers
//! are accepted, and the fixed codes of test numbers.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::code::{Alphabet, Code};
use crate::phone::{NumberType, PhoneParser, Region};
use crate::provider::templates::TemplateKey;
use crate::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VerificationConfig {
    pub code_length: usize,
    /// Seconds a code stays valid.
    pub ttl: u64,
    /// Seconds between two sends to the same session and phone.
    pub resend_interval: u64,
    /// Wrong tries before a code dies.
    pub max_attempts: u32,
    /// ISO 3166-1 alpha-2 region for numbers typed without `+` (e.g. "CN"); unset: E.164 only.
    pub default_region: Option<Region>,
    /// Key for code MACs. Unset: a random key kept in the store (shared by all daemons on it).
    pub secret: Secret,
    /// A file holding the key instead, read at start-up.
    pub secret_file: Option<PathBuf>,
    /// Message text; `{code}` and `{minutes}` are replaced.
    pub template: String,
    /// Message texts by locale (`zh-CN`, `zh`) or E.164 prefix (`+86`); see `provider::templates`.
    pub templates: BTreeMap<TemplateKey, String>,
    /// Line types a code may be sent to; premium-rate and similar numbers are a pumping vector.
    pub number_types: Vec<NumberType>,
    /// Fixed codes for test numbers: nothing is sent, every other rule applies.
    pub test_numbers: BTreeMap<String, String>,
    /// What a resend within a code's lifetime sends: the same code again or a new one.
    pub resend: ResendMode,
    /// Seconds a code may live in all when `same_code` resends extend it; unset: 3 × `ttl`
    /// (at most 86400).
    pub max_code_lifetime: Option<u64>,
    /// The symbols codes are made of.
    pub alphabet: Alphabet,
    /// Domain for the origin-bound last line `@domain #code` (WebOTP, iOS autofill); unset: none.
    pub otp_domain: Option<String>,
}

/// `verification.resend`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResendMode {
    /// A resend while the code lives sends that code again and extends its lifetime, up to
    /// `max_code_lifetime`: the first SMS still works if it arrives late.
    #[default]
    SameCode,
    /// Every send draws a new code; the previous one stops working.
    NewCode,
}

impl VerificationConfig {
    /// The longest a `same_code` resend may keep one code alive, counted from when it was drawn.
    pub fn max_code_lifetime(&self) -> u64 {
        self.max_code_lifetime
            .unwrap_or_else(|| self.ttl.saturating_mul(3).min(86_400))
    }

    /// The parser for numbers in requests and in `test_numbers`, from parts read and checked
    /// with the configuration.
    pub fn phone_parser(&self) -> PhoneParser {
        PhoneParser::new(self.default_region, &self.number_types)
    }

    /// `test_numbers` keyed by canonical E.164 form, which is what requests look up: a test
    /// number written with spaces must not be sent real messages. Refuses numbers that do not
    /// parse, two spellings of one number and codes that do not fit `code_length` and
    /// `alphabet`.
    pub fn fixed_codes(
        &self,
        phones: &PhoneParser,
    ) -> Result<HashMap<String, Code>, (&'static str, String)> {
        let mut codes = HashMap::new();
        for (number, code) in &self.test_numbers {
            let phone = phones
                .parse(number)
                .map_err(|e| ("verification.test_numbers", format!("{number:?}: {e}")))?;
            let parsed = Code::parse_in(code, self.alphabet)
                .filter(|_| code.len() == self.code_length)
                .ok_or_else(|| {
                    (
                        "verification.test_numbers",
                        format!(
                            "code for {number:?} must be {} symbols of verification.alphabet",
                            self.code_length
                        ),
                    )
                })?;
            if codes.insert(phone.as_str().to_owned(), parsed).is_some() {
                return Err((
                    "verification.test_numbers",
                    format!("{number:?} is {} again", phone.as_str()),
                ));
            }
        }
        Ok(codes)
    }

    /// Ranges and relations serde cannot check; returns the key at fault and why.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        let v = self;
        if !(4..=10).contains(&v.code_length) {
            return Err((
                "verification.code_length",
                "must be between 4 and 10".into(),
            ));
        }
        if v.ttl == 0 || v.ttl > 86_400 {
            return Err((
                "verification.ttl",
                "must be between 1 and 86400 seconds".into(),
            ));
        }
        if v.resend_interval >= v.ttl {
            return Err((
                "verification.resend_interval",
                format!("must be shorter than verification.ttl ({} s)", v.ttl),
            ));
        }
        if v.max_attempts == 0 || v.max_attempts > 100 {
            return Err((
                "verification.max_attempts",
                "must be between 1 and 100".into(),
            ));
        }
        if let Some(max) = v.max_code_lifetime {
            if max < v.ttl || max > 86_400 {
                return Err((
                    "verification.max_code_lifetime",
                    format!(
                        "must be between verification.ttl ({} s) and 86400 seconds",
                        v.ttl
                    ),
                ));
            }
        }
        if let Some(domain) = &v.otp_domain {
            crate::provider::templates::check_otp_domain(domain)
                .map_err(|e| ("verification.otp_domain", e))?;
        }
        crate::provider::templates::validate(
            &v.template,
            &v.templates,
            std::time::Duration::from_secs(v.ttl),
            v.otp_domain.as_deref(),
        )?;
        if v.number_types.is_empty() {
            return Err((
                "verification.number_types",
                "must name at least one type, e.g. [\"mobile\", \"fixed_line_or_mobile\"]".into(),
            ));
        }
        PhoneParser::check_types(&v.number_types).map_err(|e| ("verification.number_types", e))?;
        self.fixed_codes(&self.phone_parser())?;
        Ok(())
    }
}

impl Default for VerificationConfig {
    fn default() -> Self {
        Self {
            code_length: 6,
            ttl: 300,
            resend_interval: 60,
            max_attempts: 5,
            default_region: None,
            secret: Secret::default(),
            secret_file: None,
            template: "Your verification code is {code}. It expires in {minutes} minutes.".into(),
            templates: BTreeMap::new(),
            number_types: NumberType::defaults(),
            test_numbers: BTreeMap::new(),
            resend: ResendMode::default(),
            max_code_lifetime: None,
            alphabet: Alphabet::default(),
            otp_domain: None,
        }
    }
}
