//! A strict parser for the OpenMetrics text that `/metrics` serves: every sample belongs to a
//! declared family and carries a suffix its type allows, labels are quoted and escaped properly,
//! histogram buckets are cumulative and end at `+Inf` = `_count`, and the text ends in `# EOF`.

use std::collections::{BTreeMap, HashMap};

/// Labels of one sample, sorted by name.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Default)]
pub struct Scrape {
    /// Family name → type (`counter`, `gauge`, `histogram`, …).
    pub types: HashMap<String, String>,
    /// (sample name, labels) → value.
    pub samples: HashMap<(String, Labels), f64>,
}

impl Scrape {
    /// The value of `name{labels}`, or `None` when that sample is absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// Like [`get`](Self::get), but an absent sample counts as 0 (counters not yet touched).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

fn allowed_suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "histogram" => &["_bucket", "_count", "_sum", "_created"],
        "gauge" | "unknown" | "stateset" | "info" => &[""],
        other => panic!("unsupported metric type {other:?}"),
    }
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::new();
    let mut rest = s;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !valid_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {name} value is not quoted"));
        }
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some('"') => value.push('"'),
                    Some('\\') => value.push('\\'),
                    other => return Err(format!("bad escape {other:?} in label {name}")),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                '\n' => return Err("newline in label value".into()),
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("unterminated value of label {name}"))?;
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = &rest[end..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Parses a whole scrape; panics with the offending line on any violation.
pub fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    let lines: Vec<&str> = text.lines().collect();
    assert!(text.ends_with('\n'), "the text must end with a newline");
    assert_eq!(lines.last(), Some(&"# EOF"), "the text must end with # EOF");
    let mut current: Option<(String, String)> = None;
    for (n, line) in lines[..lines.len() - 1].iter().enumerate() {
        let fail = |why: String| -> ! { panic!("line {}: {why}: {line:?}", n + 1) };
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            if !valid_name(name) {
                fail(format!("bad family name {name:?}"));
            }
            match kw {
                "TYPE" => {
                    let kind = parts.next().unwrap_or("").to_owned();
                    allowed_suffixes(&kind);
                    if scrape.types.insert(name.to_owned(), kind.clone()).is_some() {
                        fail("family declared twice".into());
                    }
                    current = Some((name.to_owned(), kind));
                }
                "HELP" | "UNIT" => {}
                _ => fail("unknown comment".into()),
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            fail("blank line or malformed comment".into());
        }
        let (name_end, has_labels) = match line.find(['{', ' ']) {
            Some(i) => (i, line.as_bytes()[i] == b'{'),
            None => fail("sample without value".into()),
        };
        let name = &line[..name_end];
        let (labels, rest) = if has_labels {
            parse_labels(&line[name_end + 1..]).unwrap_or_else(|e| fail(e))
        } else {
            (Labels::new(), &line[name_end..])
        };
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| fail("no space before the value".into()));
        let value = parse_value(value.split(' ').next().unwrap()).unwrap_or_else(|e| fail(e));
        let Some((family, kind)) = &current else {
            fail("sample before any # TYPE".into())
        };
        let suffix = name
            .strip_prefix(family.as_str())
            .unwrap_or_else(|| fail(format!("sample outside its family {family}")));
        if !allowed_suffixes(kind).contains(&suffix) {
            fail(format!("suffix {suffix:?} not allowed for a {kind}"));
        }
        if kind == "counter" && suffix == "_total" && (value.is_nan() || value < 0.0) {
            fail("negative counter".into());
        }
        if scrape
            .samples
            .insert((name.to_owned(), labels), value)
            .is_some()
        {
            fail("duplicate sample".into());
        }
    }
    check_histograms(&scrape);
    scrape
}

/// Buckets rise with `le`, never fall, and the `+Inf` bucket equals `_count`.
fn check_histograms(scrape: &Scrape) {
    for (family, kind) in &scrape.types {
        if kind != "histogram" {
            continue;
        }
        let bucket = format!("{family}_bucket");
        let mut series: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
        for ((name, labels), v) in &scrape.samples {
            if *name == bucket {
                let mut rest = labels.clone();
                let le = rest.remove("le").expect("bucket without le");
                series
                    .entry(rest)
                    .or_default()
                    .push((parse_value(&le).unwrap(), *v));
            }
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "{family}{labels:?}: buckets are not cumulative"
            );
            let (le, last) = *buckets.last().unwrap();
            assert_eq!(le, f64::INFINITY, "{family}{labels:?}: no +Inf bucket");
            let count = scrape.samples[&(format!("{family}_count"), labels.clone())];
            assert_eq!(last, count, "{family}{labels:?}: +Inf bucket != _count");
        }
    }
}

#[test]
fn rejects_what_it_should() {
    let bad = [
        "x_total 1\n# EOF\n",                        // no TYPE
        "# TYPE x counter\nx 1\n# EOF\n",            // counter without _total
        "# TYPE x counter\nx_total{a=b} 1\n# EOF\n", // unquoted label
        "# TYPE x gauge\nx 1\n",                     // no EOF
        "# TYPE x gauge\nx one\n# EOF\n",            // bad value
        "# TYPE x gauge\nx 1\nx 2\n# EOF\n",         // duplicate
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n# EOF\n",
    ];
    for text in bad {
        assert!(
            std::panic::catch_unwind(|| parse(text)).is_err(),
            "accepted {text:?}"
        );
    }
    let good =
        parse("# HELP x a \"gauge\"\n# TYPE x gauge\nx{a=\"q\\\"\\\\\",b=\"\"} 1.5\n# EOF\n");
    assert_eq!(good.get("x", &[("a", "q\"\\"), ("b", "")]), Some(1.5));
}
