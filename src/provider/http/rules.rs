//! A gateway's answer → what happens next, by the configured success rule and error rules, then
//! by HTTP defaults. Only the status and the fields the rules name are read; the rest of the
//! answer (which may quote the number or the text) is never logged.

use super::config::{Class, Compiled};
use crate::provider::ProviderError;
use crate::provider::retry::Attempt;

/// A JSON value as rules compare it: strings as they are, other scalars as their JSON text.
fn as_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A gateway-given string made safe for a log line: `[A-Za-z0-9._:^-]`, at most 64 characters.
pub(crate) fn token(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '^' | ':'))
        .take(64)
        .collect()
}

pub(crate) fn classify(kind: &str, c: &Compiled, status: u16, body: &[u8]) -> Attempt {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |p: &str| json.as_ref().and_then(|j| j.pointer(p)).and_then(as_text);
    let status_ok = if c.success_status.is_empty() {
        (200..300).contains(&status)
    } else {
        c.success_status.contains(&status)
    };
    let fields_ok = c
        .success
        .as_ref()
        .is_none_or(|(p, want)| field(p).as_deref() == Some(want.as_str()));
    if status_ok && fields_ok {
        let id = c
            .message_id_pointer
            .as_deref()
            .and_then(field)
            .map(|id| token(&id))
            .filter(|id| !id.is_empty());
        return Attempt::Sent(id);
    }
    for rule in &c.rules {
        if !rule.status.is_empty() && !rule.status.contains(&status) {
            continue;
        }
        let matched = match &rule.pointer {
            None => None,
            Some(p) => match field(p) {
                Some(v) if rule.values.is_empty() || rule.values.contains(&v) => Some((p, v)),
                _ => continue,
            },
        };
        let what = match matched {
            // Only a value the operator listed is named: an open rule's field could be anything.
            Some((p, v)) if !rule.values.is_empty() => {
                format!("{kind}: HTTP {status}, {p} = {}", token(&v))
            }
            Some((p, _)) => format!("{kind}: HTTP {status}, {p} present"),
            None => format!("{kind}: HTTP {status}"),
        };
        return match rule.class {
            Class::Transient => Attempt::Retry(what),
            Class::Recipient => Attempt::Failed(ProviderError::Recipient {
                message: what,
                rate_limited: false,
            }),
            Class::RateLimited => Attempt::Failed(ProviderError::Recipient {
                message: what,
                rate_limited: true,
            }),
            Class::Configuration => Attempt::Failed(ProviderError::Configuration(what)),
        };
    }
    // No rule spoke: timeouts, throttling and server errors may pass; anything else is an
    // answer we were not told how to read, and a send we do not understand is not repeated.
    if status == 408 || status == 429 || (500..600).contains(&status) {
        return Attempt::Retry(format!("{kind}: HTTP {status}"));
    }
    Attempt::Failed(ProviderError::Configuration(format!(
        "{kind}: unexpected answer, HTTP {status}{}",
        if status_ok {
            " that does not meet the success rule"
        } else {
            ""
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::http::HttpConfig;

    fn compiled(text: &str) -> Compiled {
        let c: HttpConfig = toml::from_str(text).unwrap();
        c.compile("provider.http").unwrap()
    }

    const VONAGE_LIKE: &str = r#"
url = "https://gw/sms"
success_pointer = "/messages/0/status"
success_value = "0"
message_id_pointer = "/messages/0/message-id"
errors = [
  { pointer = "/messages/0/status", values = ["7", "33"], class = "recipient" },
  { pointer = "/messages/0/status", values = ["1"], class = "transient" },
  { status = [429], class = "rate_limited" },
  { status = [400], pointer = "/code", values = ["21211"], class = "recipient" },
]
"#;

    fn answer(status: u16, body: &str) -> Attempt {
        classify("gw", &compiled(VONAGE_LIKE), status, body.as_bytes())
    }

    #[test]
    fn success_needs_the_status_and_the_field() {
        assert_eq!(
            answer(
                200,
                r#"{"messages":[{"status":"0","message-id":"0A00<b>01"}]}"#
            ),
            Attempt::Sent(Some("0A00b01".into()))
        );
        assert!(matches!(
            answer(200, r#"{"messages":[{"status":"9"}]}"#),
            Attempt::Failed(ProviderError::Configuration(_))
        ));
        assert!(matches!(
            answer(301, r#"{"messages":[{"status":"0"}]}"#),
            Attempt::Failed(ProviderError::Configuration(_))
        ));
    }

    #[test]
    fn rules_match_in_order_and_numbers_compare_as_text() {
        let Attempt::Failed(ProviderError::Recipient {
            message,
            rate_limited: false,
        }) = answer(
            200,
            r#"{"messages":[{"status":"7","error-text":"+4477 barred"}]}"#,
        )
        else {
            panic!()
        };
        assert_eq!(message, "gw: HTTP 200, /messages/0/status = 7");
        assert!(matches!(
            answer(200, r#"{"messages":[{"status":"1"}]}"#),
            Attempt::Retry(_)
        ));
        assert!(matches!(
            answer(429, "{}"),
            Attempt::Failed(ProviderError::Recipient {
                rate_limited: true,
                ..
            })
        ));
        assert!(matches!(
            answer(
                400,
                r#"{"code":21211,"message":"The 'To' number +1555 is not valid"}"#
            ),
            Attempt::Failed(ProviderError::Recipient { .. })
        ));
        // The same code under another status is not that rule.
        assert!(matches!(
            answer(401, r#"{"code":21211}"#),
            Attempt::Failed(ProviderError::Configuration(_))
        ));
    }

    #[test]
    fn defaults_retry_server_errors_and_refuse_the_rest() {
        let c = compiled("url = \"https://gw/\"");
        for s in [408, 429, 500, 502, 503, 599] {
            assert!(
                matches!(classify("gw", &c, s, b""), Attempt::Retry(_)),
                "{s}"
            );
        }
        for s in [300, 400, 401, 403, 404, 422] {
            assert!(
                matches!(
                    classify("gw", &c, s, b"<html>"),
                    Attempt::Failed(ProviderError::Configuration(_))
                ),
                "{s}"
            );
        }
        assert_eq!(classify("gw", &c, 204, b""), Attempt::Sent(None));
    }

    #[test]
    fn the_answer_never_reaches_the_error_text() {
        let body = r#"{"code":21211,"message":"The 'To' number +15005550001 is not a valid phone number."}"#;
        for status in [400, 500, 404] {
            let text = format!("{:?}", answer(status, body));
            assert!(!text.contains("15005550001"), "{text}");
        }
    }
}
