//! `Accept-Language` (RFC 9110 §12.5.4): which message template a browser's person reads best
//! when the request names no `locale`. Parsing is bounded, so a huge header costs little.

use http::header::ACCEPT_LANGUAGE;
use http::request::Parts;

use crate::provider::templates::Templates;

/// Header bytes looked at; browsers send well under 200.
const MAX_HEADER: usize = 1024;
/// Language ranges considered, in header order.
const MAX_RANGES: usize = 16;

/// The header's language ranges, most preferred first: ordered by q-value (ties keep header
/// order), without `*`, malformed entries and those with q=0 (RFC 9110: "not acceptable").
pub fn ranges(header: &str) -> Vec<String> {
    let header = match header.char_indices().nth(MAX_HEADER) {
        Some((cut, _)) => &header[..cut],
        None => header,
    };
    let mut weighted: Vec<(u16, String)> = header
        .split(',')
        .take(MAX_RANGES)
        .filter_map(|item| {
            let mut parts = item.split(';');
            let tag = parts.next()?.trim();
            let mut q = 1000;
            for p in parts {
                let (k, v) = p.split_once('=')?;
                if k.trim().eq_ignore_ascii_case("q") {
                    q = qvalue(v.trim())?;
                }
            }
            (q > 0 && is_range(tag)).then(|| (q, tag.to_owned()))
        })
        .collect();
    // A stable sort keeps the header's order among equal weights.
    weighted.sort_by_key(|(q, _)| std::cmp::Reverse(*q));
    weighted.into_iter().map(|(_, t)| t).collect()
}

/// A qvalue in thousandths: `0`, `1`, `0.5`, `1.000`, up to three decimals (RFC 9110 §12.4.2).
fn qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

/// `language-range` without the wildcard: 1–8 letters, then `-` and 1–8 alphanumerics, repeated.
fn is_range(tag: &str) -> bool {
    let mut parts = tag.split('-');
    parts
        .next()
        .is_some_and(|l| (1..=8).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphabetic()))
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
        && tag.len() <= 35
}

/// The locale for a send: the one the request body names, else the first of the browser's
/// languages that a template serves, else none (the number's prefix decides).
pub fn locale(templates: &Templates, parts: &Parts, named: Option<String>) -> Option<String> {
    if named.is_some() {
        return named;
    }
    let header = parts.headers.get(ACCEPT_LANGUAGE)?.to_str().ok()?;
    templates.negotiate(&ranges(header)).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_values_order_the_ranges_and_ties_keep_header_order() {
        assert_eq!(
            ranges("en-US,en;q=0.9,zh-CN;q=0.95, fr ;q=0.9 ,de;q=1.0"),
            ["en-US", "de", "zh-CN", "en", "fr"]
        );
        assert_eq!(ranges("zh-Hans-CN"), ["zh-Hans-CN"]);
    }

    #[test]
    fn refused_wildcard_and_malformed_entries_are_dropped() {
        assert_eq!(
            ranges("zh;q=0, *;q=0.5, en;q=2, fr;q=0.1234, de;q=abc, es;q=0.3, it;q=.5, x_y, ja"),
            ["ja", "es"]
        );
        assert!(ranges("").is_empty());
        assert!(ranges(";;;,,,").is_empty());
        assert!(ranges("toolonglanguage").is_empty());
    }

    #[test]
    fn huge_headers_are_cut_short() {
        let many = vec!["xx;q=0.1"; 10_000].join(",") + ",zh";
        let r = ranges(&many);
        assert_eq!(r.len(), MAX_RANGES);
        assert!(!r.contains(&"zh".to_owned()));
        let wide = "é".repeat(100_000);
        assert!(ranges(&wide).is_empty());
    }
}
