//! Which message text a recipient gets: `verification.templates` keyed by locale (`zh-CN`, `zh`)
//! or by E.164 prefix (`+86`), falling back to `verification.template`. Every template is checked
//! at start-up to fit one SMS part with the longest code, so nothing is ever truncated. With
//! `verification.otp_domain` every text ends with the origin-bound line `@domain #code`, the
//! convention (WebOTP, iOS and Android autofill) that lets a phone offer the code to that site.

use std::collections::BTreeMap;
use std::time::Duration;

use super::render;
use super::sms_length::{Encoding, measure};
use crate::code::Code;
use crate::phone::{PhoneNumber, Prefix};

mod key;

pub use key::TemplateKey;

/// The longest code `verification.code_length` allows: templates are measured with it.
const LONGEST_CODE: &str = "0123456789";

/// The configured templates, ready for lookup.
#[derive(Debug, Clone)]
pub struct Templates {
    default: String,
    /// Lower-cased language tags.
    by_locale: BTreeMap<String, String>,
    /// E.164 prefixes, longest first.
    by_prefix: Vec<(Prefix, String)>,
    /// `verification.otp_domain`, checked by [`check_otp_domain`].
    otp_domain: Option<String>,
}

impl Templates {
    /// Sorts the entries of `verification.templates` into lookup tables; their texts have been
    /// checked by [`validate`].
    pub fn new(
        default: &str,
        templates: &BTreeMap<TemplateKey, String>,
        otp_domain: Option<&str>,
    ) -> Self {
        let mut by_locale = BTreeMap::new();
        let mut by_prefix = Vec::new();
        for (key, text) in templates {
            match key {
                TemplateKey::Prefix(p) => by_prefix.push((p.clone(), text.clone())),
                TemplateKey::Locale(l) => {
                    by_locale.insert(l.to_ascii_lowercase(), text.clone());
                }
            }
        }
        by_prefix.sort_by_key(|(p, _): &(Prefix, String)| std::cmp::Reverse(p.digits()));
        Self {
            default: default.to_owned(),
            by_locale,
            by_prefix,
            otp_domain: otp_domain.map(str::to_owned),
        }
    }

    /// The template for `tag`, dropping subtags from the right (`zh-Hant-TW`, `zh-Hant`, `zh`).
    fn by_tag(&self, tag: &str) -> Option<&str> {
        let mut tag = tag.to_ascii_lowercase();
        loop {
            if let Some(t) = self.by_locale.get(&tag) {
                return Some(t);
            }
            tag.truncate(tag.rfind('-')?);
        }
    }

    /// The first of `ranges` (a browser's languages, most preferred first) that some locale
    /// template serves; `None` sends the choice on to the number's prefix.
    pub fn negotiate<'a>(&self, ranges: &'a [String]) -> Option<&'a str> {
        ranges
            .iter()
            .map(String::as_str)
            .find(|r| self.by_tag(r).is_some())
    }

    /// The template for this recipient: the locale (dropping subtags from the right: `zh-Hant-TW`,
    /// `zh-Hant`, `zh`), then the longest matching prefix, then the default. The person's own
    /// language says more about them than the country of their number.
    pub fn pick(&self, phone: &PhoneNumber, locale: Option<&str>) -> &str {
        if let Some(t) = locale.and_then(|l| self.by_tag(l)) {
            return t;
        }
        self.by_prefix
            .iter()
            .find(|(p, _)| p.matches(phone))
            .map_or(&self.default, |(_, t)| t)
    }

    /// The message text for this recipient.
    pub fn render(
        &self,
        phone: &PhoneNumber,
        locale: Option<&str>,
        code: &Code,
        lifetime: Duration,
    ) -> String {
        with_otp_line(
            render(self.pick(phone, locale), code, lifetime),
            self.otp_domain.as_deref(),
            code,
        )
    }
}

/// `text` with the origin-bound last line `@domain #code` when a domain is configured.
fn with_otp_line(mut text: String, domain: Option<&str>, code: &Code) -> String {
    if let Some(domain) = domain {
        text.push_str("\n@");
        text.push_str(domain);
        text.push_str(" #");
        text.push_str(code.expose());
    }
    text
}

/// `verification.otp_domain`: a lower-case host name as browsers match it against the page's
/// origin — at least two dot-separated labels of `a-z`, `0-9` and inner `-` (IDNs in their
/// `xn--` form), at most 253 characters, no scheme, port, path or trailing dot, not an address.
pub fn check_otp_domain(domain: &str) -> Result<(), String> {
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let tld_ok = labels
        .last()
        .is_some_and(|t| !t.bytes().all(|b| b.is_ascii_digit()));
    if domain.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) || !tld_ok {
        return Err(format!(
            "{domain:?} must be a lower-case host name such as \"example.com\" (no scheme, port, \
             path or trailing dot; IDNs in xn-- form)"
        ));
    }
    Ok(())
}

/// Checks the default template and every entry of `verification.templates` (whose keys were
/// parsed as [`TemplateKey`]s): each text holds `{code}` and, rendered with a 10-digit code and the configured
/// lifetime (and the `@domain #code` line when `otp_domain` is set), fits one SMS part (160
/// GSM-7 septets or 70 UCS-2 units).
pub fn validate(
    default: &str,
    templates: &BTreeMap<TemplateKey, String>,
    ttl: Duration,
    otp_domain: Option<&str>,
) -> Result<(), (&'static str, String)> {
    check_text(default, ttl, otp_domain).map_err(|e| ("verification.template", e))?;
    for (key, text) in templates {
        let key = key.as_str();
        check_text(text, ttl, otp_domain)
            .map_err(|e| ("verification.templates", format!("{key:?}: {e}")))?;
    }
    Ok(())
}

fn check_text(text: &str, ttl: Duration, otp_domain: Option<&str>) -> Result<(), String> {
    if !text.contains("{code}") {
        return Err("must contain {code}".into());
    }
    let code = Code::parse(LONGEST_CODE).ok_or("the longest code does not parse")?;
    let size = measure(&with_otp_line(render(text, &code, ttl), otp_domain, &code));
    if !size.fits_one_part() {
        let (alphabet, unit) = match size.encoding {
            Encoding::Gsm7 => ("GSM-7", "characters"),
            Encoding::Ucs2 => (
                "UCS-2 (the text has characters outside GSM-7)",
                "characters",
            ),
        };
        let otp = if otp_domain.is_some() {
            " (with the verification.otp_domain line)"
        } else {
            ""
        };
        return Err(format!(
            "rendered with a 10-digit code{otp} it is {} {unit} in {alphabet}, more than the {} of one SMS",
            size.units, size.limit
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "Your code is {code}.";

    fn templates(pairs: &[(&str, &str)]) -> BTreeMap<TemplateKey, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.to_string()))
            .collect()
    }

    fn phone(s: &str) -> PhoneNumber {
        PhoneNumber::parse_e164(s).unwrap()
    }

    #[test]
    fn locale_then_longest_prefix_then_default() {
        let t = Templates::new(
            DEFAULT,
            &templates(&[
                ("zh", "验证码 {code}"),
                ("zh-TW", "驗證碼 {code}"),
                ("+86", "CN {code}"),
                ("+852", "HK {code}"),
                ("+8", "8 {code}"),
            ]),
            None,
        );
        let cn = phone("+8613800138000");
        assert_eq!(t.pick(&cn, Some("zh-Hant-TW")), "验证码 {code}");
        assert_eq!(t.pick(&cn, Some("ZH-tw")), "驗證碼 {code}");
        assert_eq!(t.pick(&cn, Some("en-US")), "CN {code}");
        assert_eq!(t.pick(&cn, None), "CN {code}");
        assert_eq!(t.pick(&phone("+85291234567"), None), "HK {code}");
        assert_eq!(t.pick(&phone("+81312345678"), None), "8 {code}");
        assert_eq!(t.pick(&phone("+12015550123"), None), DEFAULT);
        let code = Code::parse("4821").unwrap();
        assert_eq!(
            t.render(&cn, Some("zh"), &code, Duration::from_secs(300)),
            "验证码 4821"
        );
    }

    #[test]
    fn keys_must_be_locales_or_prefixes() {
        let ttl = Duration::from_secs(300);
        for good in ["zh", "zh-CN", "zh-Hant-TW", "+1", "+8613"] {
            assert_eq!(
                validate(DEFAULT, &templates(&[(good, "{code}")]), ttl, None),
                Ok(())
            );
        }
        // Keys that are neither never become a `TemplateKey` (see `key.rs`), and a configuration
        // naming one is refused as it is read (`config::tests`).
    }

    #[test]
    fn every_template_must_fit_one_part_with_the_longest_code() {
        let ttl = Duration::from_secs(86_400);
        // 150 letters + a 10-digit code: 160 septets, one part exactly.
        let fits = format!("{}{{code}}", "a".repeat(150));
        assert_eq!(validate(&fits, &BTreeMap::new(), ttl, None), Ok(()));
        let too_long = format!("{}{{code}}", "a".repeat(151));
        let err = validate(&too_long, &BTreeMap::new(), ttl, None).unwrap_err();
        assert_eq!(err.0, "verification.template");
        assert!(err.1.contains("161") && err.1.contains("160"), "{}", err.1);

        // Chinese goes as UCS-2: 70 units. `{minutes}` renders as 1440 here.
        let zh = format!("{}{{code}}，{{minutes}}分钟", "码".repeat(53));
        assert_eq!(
            validate(DEFAULT, &templates(&[("zh", &zh)]), ttl, None),
            Ok(())
        );
        let zh = format!("{}{{code}}，{{minutes}}分钟", "码".repeat(54));
        let err = validate(DEFAULT, &templates(&[("zh", &zh)]), ttl, None).unwrap_err();
        assert_eq!(err.0, "verification.templates");
        assert!(
            err.1.contains("\"zh\"") && err.1.contains("UCS-2"),
            "{}",
            err.1
        );
    }

    #[test]
    fn every_template_needs_the_code() {
        let err = validate(
            DEFAULT,
            &templates(&[("+86", "no code here")]),
            Duration::from_secs(60),
            None,
        )
        .unwrap_err();
        assert!(err.1.contains("{code}"), "{}", err.1);
    }

    #[test]
    fn the_otp_line_ends_every_template_and_counts_towards_its_length() {
        let t = Templates::new(
            DEFAULT,
            &templates(&[("zh", "验证码 {code}")]),
            Some("example.com"),
        );
        let code = Code::parse("4821").unwrap();
        let ttl = Duration::from_secs(300);
        let us = phone("+12015550123");
        assert_eq!(
            t.render(&us, None, &code, ttl),
            "Your code is 4821.\n@example.com #4821"
        );
        assert_eq!(
            t.render(&us, Some("zh-CN"), &code, ttl),
            "验证码 4821\n@example.com #4821"
        );
        // 150 letters + a 10-digit code fit alone; the 25 more septets of the line do not.
        let fits = format!("{}{{code}}", "a".repeat(150));
        assert_eq!(validate(&fits, &BTreeMap::new(), ttl, None), Ok(()));
        let err = validate(&fits, &BTreeMap::new(), ttl, Some("example.com")).unwrap_err();
        assert_eq!(err.0, "verification.template");
        assert!(
            err.1.contains("otp_domain") && err.1.contains("185"),
            "{}",
            err.1
        );
        // In UCS-2 the line costs its 25 units out of 70.
        let zh = format!("{}{{code}}", "码".repeat(35));
        let with = validate(
            DEFAULT,
            &templates(&[("zh", &zh)]),
            ttl,
            Some("example.com"),
        );
        assert_eq!(with, Ok(()));
        let zh = format!("{}{{code}}", "码".repeat(36));
        let err = validate(
            DEFAULT,
            &templates(&[("zh", &zh)]),
            ttl,
            Some("example.com"),
        );
        assert_eq!(err.unwrap_err().0, "verification.templates");
    }

    #[test]
    fn otp_domains_are_bare_lower_case_host_names() {
        for good in [
            "example.com",
            "login.example.co.uk",
            "xn--fiqs8s.cn",
            "a-b.io",
        ] {
            assert_eq!(check_otp_domain(good), Ok(()), "{good}");
        }
        let long = format!("{}.com", "a".repeat(64));
        let too_long = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        for bad in [
            "",
            "localhost",
            "Example.com",
            "https://example.com",
            "example.com:443",
            "example.com/",
            "example.com.",
            ".example.com",
            "-x.com",
            "x-.com",
            "exa mple.com",
            "例子.com",
            "192.168.0.1",
            "@example.com",
            "example.com #123",
            long.as_str(),
            too_long.as_str(),
        ] {
            assert!(check_otp_domain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_browsers_languages_pick_the_first_served_locale() {
        let t = Templates::new(
            DEFAULT,
            &templates(&[("zh", "验证码 {code}"), ("fr", "Code {code}")]),
            None,
        );
        let ranges = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            t.negotiate(&ranges(&["de-DE", "zh-Hans-CN", "fr"])),
            Some("zh-Hans-CN")
        );
        assert_eq!(t.negotiate(&ranges(&["FR-ca", "zh"])), Some("FR-ca"));
        assert_eq!(t.negotiate(&ranges(&["de", "en"])), None);
        assert_eq!(t.negotiate(&[]), None);
    }
}
