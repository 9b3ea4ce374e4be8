//! What session data may hold, decided once for every route and both stores: PostgreSQL's
//! `jsonb` cannot hold U+0000 and SQLite can, JSON integers beyond 64 bits would silently turn
//! into floats, and a name one route accepts must be usable on every other. Checking here, before
//! any store is asked, is what makes both stores answer the same.

use serde_json::{Map, Value};

/// Longest data name, in characters (the seed's `session[name]` keys are short words).
pub const MAX_NAME_CHARS: usize = 256;

/// Deepest nesting of arrays and objects inside one value; deeper is refused rather than left
/// to each JSON parser's own recursion limit.
pub const MAX_DEPTH: usize = 64;

/// Why a name or value was refused; the message is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidData(pub String);

/// The one name rule: 1 to 256 characters, no U+0000.
pub fn check_name(name: &str) -> Result<(), InvalidData> {
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(InvalidData(format!(
            "data names are 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if name.contains('\0') {
        return Err(InvalidData(
            "data names must not contain U+0000 (NUL)".into(),
        ));
    }
    Ok(())
}

/// A value may hold any JSON except U+0000 in a string or object key, and nesting deeper than
/// [`MAX_DEPTH`]. `name` only labels the message.
pub fn check_value(name: &str, value: &Value) -> Result<(), InvalidData> {
    // Explicit stack: the depth bound is what we check, so the walk must not depend on it.
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let nested = matches!(v, Value::Array(_) | Value::Object(_));
        if nested && depth >= MAX_DEPTH {
            return Err(InvalidData(format!(
                "the value of {:?} nests deeper than {MAX_DEPTH} levels",
                shorten(name)
            )));
        }
        let nul = || {
            InvalidData(format!(
                "the value of {:?} contains U+0000 (NUL), which session data cannot hold",
                shorten(name)
            ))
        };
        match v {
            Value::String(s) if s.contains('\0') => return Err(nul()),
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            Value::Object(map) => {
                if map.keys().any(|k| k.contains('\0')) {
                    return Err(nul());
                }
                stack.extend(map.values().map(|i| (i, depth + 1)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Every name and value of a whole data object (session creation).
pub fn check_data(data: &Map<String, Value>) -> Result<(), InvalidData> {
    for (name, value) in data {
        check_name(name)?;
        check_value(name, value)?;
    }
    Ok(())
}

/// Refuses integer literals that fit neither `i64` nor `u64`. serde_json reads them as `f64`,
/// losing digits without a word, so the raw body is scanned for them. `body` must be valid JSON.
pub fn check_integers(body: &[u8]) -> Result<(), InvalidData> {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                // Skip the string; a backslash escapes the next byte, which is enough to find
                // the closing quote in valid JSON.
                i += 1;
                while i < body.len() && body[i] != b'"' {
                    i += if body[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < body.len()
                    && matches!(body[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = std::str::from_utf8(&body[start..i]).unwrap_or("");
                let integer = !token.contains(['.', 'e', 'E']);
                if integer && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                    return Err(InvalidData(format!(
                        "the integer {} does not fit in 64 bits; send it as a string",
                        shorten(token)
                    )));
                }
                // A fraction or exponent is stored as a 64-bit float, written back in its
                // shortest form: refused unless that form is the same decimal number.
                if !integer && !same_decimal(token) {
                    return Err(InvalidData(format!(
                        "the number {} cannot be kept exactly (it needs more precision or range \
                         than a 64-bit float); send it as a string",
                        shorten(token)
                    )));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// True when the `f64` nearest to the JSON number `token` prints as the same decimal value
/// (`1.50`, `15e-1` and `1.5` are one value; `0.1000000000000000000001` is not `0.1`).
fn same_decimal(token: &str) -> bool {
    match token.parse::<f64>() {
        Ok(f) if f.is_finite() => decimal(token) == decimal(&format!("{f:e}")),
        _ => false,
    }
}

/// A decimal's canonical form: (negative, significant digits, exponent of the last digit).
fn decimal(text: &str) -> Option<(bool, String, i64)> {
    let (neg, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let trimmed = digits.trim_start_matches('0');
    let sig = trimmed.trim_end_matches('0');
    if sig.is_empty() {
        return Some((false, String::new(), 0));
    }
    let exp = exp - frac.len() as i64 + (trimmed.len() - sig.len()) as i64;
    Some((neg, sig.to_owned(), exp))
}

/// The size a session's data counts against `session.max_data_bytes`: its compact JSON text.
pub fn data_bytes(data: &Map<String, Value>) -> usize {
    serde_json::to_vec(data).map_or(usize::MAX, |v| v.len())
}

/// At most 40 characters of client input, for messages.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_one_rule() {
        assert!(check_name("cart").is_ok());
        assert!(check_name(&"é".repeat(256)).is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"a".repeat(257)).is_err());
        assert!(check_name("a\0b").is_err());
    }

    #[test]
    fn nul_anywhere_in_a_value_is_refused() {
        assert!(check_value("n", &json!({"a": [1, "ok"]})).is_ok());
        assert!(check_value("n", &json!("a\u{0}")).is_err());
        assert!(check_value("n", &json!({"a": [{"b": "x\u{0}"}]})).is_err());
        assert!(check_value("n", &json!({"k\u{0}": 1})).is_err());
        let mut data = Map::new();
        data.insert("x\u{0}".into(), json!(1));
        assert!(check_data(&data).is_err());
    }

    #[test]
    fn depth_is_bounded() {
        let nest = |n: usize| -> Value {
            serde_json::from_str(&format!("{}{}", "[".repeat(n), "]".repeat(n))).unwrap()
        };
        assert!(check_value("n", &nest(MAX_DEPTH)).is_ok());
        assert!(check_value("n", &nest(MAX_DEPTH + 1)).is_err());
    }

    #[test]
    fn integers_beyond_64_bits_are_found_outside_strings_only() {
        let ok = br#"{"a": [-9223372036854775808, 18446744073709551615, 1.5e300, 1e3],
                      "s": "18446744073709551616 \" 99999999999999999999"}"#;
        assert_eq!(check_integers(ok), Ok(()));
        assert!(check_integers(br#"{"a": 18446744073709551616}"#).is_err());
        assert!(check_integers(br#"{"a": [-9223372036854775809]}"#).is_err());
        assert!(check_integers(br#"{"a\\": 123456789012345678901234567890}"#).is_err());
    }

    #[test]
    fn floats_are_kept_exactly_or_refused() {
        for ok in [
            "0.1",
            "1.50",
            "15e-1",
            "-2.5E+3",
            "0.0",
            "-0.0",
            "1e-7",
            "123.456",
            "5e-324",
            "1.7976931348623157e308",
            "0.30000000000000004",
        ] {
            assert_eq!(check_integers(ok.as_bytes()), Ok(()), "{ok}");
        }
        for bad in [
            "0.1000000000000000000001",
            "3.14159265358979323846264338327950288",
            "1.5e400",
            "1e-400",
            "9007199254740993.0",
        ] {
            assert!(check_integers(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn size_is_the_compact_json() {
        let mut data = Map::new();
        data.insert("a".into(), json!("xy"));
        assert_eq!(data_bytes(&data), br#"{"a":"xy"}"#.len());
    }
}
