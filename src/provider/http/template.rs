//! The `{placeholder}` templates of `kind = "http"`: parsed once at start-up (so an unknown name
//! stops the daemon naming its key), rendered per send from the message. Escaping is the
//! caller's business: the URL percent-encodes what it inserts, JSON and form bodies are built
//! as structures and encoded by their encoders, never by pasting strings together.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::provider::OutgoingCode;
use crate::secret::Secret;

/// What a template may insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// E.164 with `+`: `+8613800138000`.
    To,
    /// Calling code and national number without `+`: `8613800138000`.
    ToDigits,
    /// The national significant number: `13800138000`.
    National,
    /// The calling code digits: `86`.
    CallingCode,
    /// The region of the number, ISO 3166 (`CN`), `001` when non-geographic.
    Country,
    Code,
    /// The rendered message text.
    Text,
    /// The recipient's language tag, empty when unknown.
    Locale,
    /// Minutes the code stays valid, rounded up.
    TtlMinutes,
    /// Seconds the code stays valid.
    TtlSeconds,
    /// A UUID per send, the same for every retry of that send (an idempotency key).
    RequestId,
    /// The configured secret; headers and body only.
    Secret,
}

const NAMES: &[(&str, Var)] = &[
    ("to", Var::To),
    ("to_digits", Var::ToDigits),
    ("national", Var::National),
    ("calling_code", Var::CallingCode),
    ("country", Var::Country),
    ("code", Var::Code),
    ("text", Var::Text),
    ("locale", Var::Locale),
    ("ttl_minutes", Var::TtlMinutes),
    ("ttl_seconds", Var::TtlSeconds),
    ("request_id", Var::RequestId),
    ("secret", Var::Secret),
];

/// The placeholder names, for error messages and the README.
pub fn names() -> String {
    NAMES
        .iter()
        .map(|(n, _)| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
}

/// A parsed template. `{{` and `}}` stand for literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Parses `text`; the error says what is wrong (the caller adds the key).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => return Err("a lone '}' (write '}}' for a literal brace)".into()),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                            _ => {
                                return Err(
                                    "an unclosed '{' (write '{{' for a literal brace)".into()
                                );
                            }
                        }
                    }
                    let var = NAMES
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| *v)
                        .ok_or_else(|| {
                            format!("unknown placeholder {{{name}}} (known: {})", names())
                        })?;
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Var(var));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template(pieces))
    }

    /// The text before the first placeholder.
    pub fn fixed_prefix(&self) -> &str {
        match self.0.first() {
            Some(Piece::Lit(l)) => l,
            _ => "",
        }
    }

    /// Whether the template inserts `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.0.contains(&Piece::Var(var))
    }

    /// The text with every placeholder replaced by its value as is.
    pub fn render(&self, vars: &Vars<'_>) -> String {
        self.render_with(vars, |s| s.to_owned())
    }

    /// The text with every inserted value percent-encoded (literal parts are kept), for URLs.
    pub fn render_url(&self, vars: &Vars<'_>) -> String {
        // Everything but RFC 3986 unreserved characters: a value can never add a path segment,
        // a query parameter or a fragment.
        const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        self.render_with(vars, |s| utf8_percent_encode(s, COMPONENT).to_string())
    }

    fn render_with(&self, vars: &Vars<'_>, escape: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Lit(l) => out.push_str(l),
                Piece::Var(v) => out.push_str(&escape(&vars.value(*v))),
            }
        }
        out
    }
}

/// The values of one send.
pub struct Vars<'a> {
    pub msg: &'a OutgoingCode,
    pub request_id: &'a str,
    pub secret: &'a Secret,
}

impl Vars<'_> {
    fn value(&self, var: Var) -> String {
        let m = self.msg;
        match var {
            Var::To => m.to.as_str().to_owned(),
            Var::ToDigits => m.to.as_str()[1..].to_owned(),
            Var::National => m.to.national().to_owned(),
            Var::CallingCode => m.to.calling_code().to_string(),
            Var::Country => m.to.region().to_owned(),
            Var::Code => m.code.expose().to_owned(),
            Var::Text => m.text.clone(),
            // The client chose it: only a language-tag shape gets through, so it can go in a
            // header or a URL without surprises.
            Var::Locale => m
                .locale
                .clone()
                .filter(|l| {
                    l.len() <= 35 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                .unwrap_or_default(),
            Var::TtlMinutes => m.lifetime.as_secs().div_ceil(60).max(1).to_string(),
            Var::TtlSeconds => m.lifetime.as_secs().to_string(),
            Var::RequestId => self.request_id.to_owned(),
            Var::Secret => self.secret.expose().to_owned(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::code::Code;
    use crate::phone::PhoneNumber;
    use std::time::Duration;

    pub(crate) fn message(to: &str, text: &str) -> OutgoingCode {
        OutgoingCode {
            to: PhoneNumber::parse_e164(to).unwrap(),
            code: Code::parse("042913").unwrap(),
            lifetime: Duration::from_secs(301),
            locale: Some("zh-CN".into()),
            text: text.into(),
        }
    }

    #[test]
    fn every_placeholder_renders_from_the_message() {
        let msg = message("+8613800138000", "Code 042913");
        let secret = Secret::new("s3");
        let vars = Vars {
            msg: &msg,
            request_id: "r-1",
            secret: &secret,
        };
        let t = Template::parse(
            "{to}|{to_digits}|{national}|{calling_code}|{country}|{code}|{text}|{locale}|{ttl_minutes}|{ttl_seconds}|{request_id}|{secret}|{{x}}",
        )
        .unwrap();
        assert_eq!(
            t.render(&vars),
            "+8613800138000|8613800138000|13800138000|86|CN|042913|Code 042913|zh-CN|6|301|r-1|s3|{x}"
        );
    }

    #[test]
    fn url_rendering_escapes_values_but_not_the_template() {
        let msg = message("+12015550123", "a&b=c/d?e#f g");
        let secret = Secret::default();
        let vars = Vars {
            msg: &msg,
            request_id: "r",
            secret: &secret,
        };
        let t = Template::parse("https://h/send?to={to}&text={text}").unwrap();
        assert_eq!(
            t.render_url(&vars),
            "https://h/send?to=%2B12015550123&text=a%26b%3Dc%2Fd%3Fe%23f%20g"
        );
    }

    #[test]
    fn bad_templates_say_why() {
        for (bad, why) in [
            ("{phone}", "unknown placeholder {phone}"),
            ("{to", "unclosed"),
            ("x}", "lone"),
            ("{to-digits}", "unclosed"),
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(Template::parse("{to}").unwrap().uses(Var::To));
        assert!(!Template::parse("{{to}}").unwrap().uses(Var::To));
    }

    #[test]
    fn a_locale_that_is_not_a_language_tag_renders_empty() {
        let mut msg = message("+12015550123", "t");
        let secret = Secret::default();
        let t = Template::parse("[{locale}]").unwrap();
        for (locale, want) in [
            ("zh-Hant-TW", "[zh-Hant-TW]"),
            ("en\r\nX: 1", "[]"),
            ("\"}", "[]"),
        ] {
            msg.locale = Some(locale.into());
            let vars = Vars {
                msg: &msg,
                request_id: "r",
                secret: &secret,
            };
            assert_eq!(t.render(&vars), want, "{locale:?}");
        }
    }
}
