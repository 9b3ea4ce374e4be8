//! What a log line may repeat from a request. Methods, paths and header values are chosen by the
//! client, so a line echoes at most a short, printable prefix of them: a 4 KB method name must
//! not become a 4 KB log line per request, nor smuggle control characters into the log.

use std::fmt;

/// Longest run of client text a log line repeats, in characters.
pub const MAX_ECHO: usize = 48;

/// Client text as a log line shows it: control characters escaped, cut after [`MAX_ECHO`]
/// characters with `…` and the original length appended.
pub struct Echo<'a>(pub &'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars().take(MAX_ECHO) {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        let len = self.0.chars().count();
        if len > MAX_ECHO {
            write!(f, "…({len} chars)")?;
        }
        Ok(())
    }
}

/// Header bytes as a log line shows them (lossy UTF-8, then [`Echo`]).
pub fn header(value: &[u8]) -> String {
    let cut = &value[..value.len().min(MAX_ECHO * 4)];
    let text = String::from_utf8_lossy(cut);
    let mut shown = Echo(&text).to_string();
    if value.len() > cut.len() {
        shown.push_str(&format!("…({} bytes)", value.len()));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut() {
        assert_eq!(Echo("GET").to_string(), "GET");
        let long = "A".repeat(4096);
        let shown = Echo(&long).to_string();
        assert!(shown.starts_with(&"A".repeat(MAX_ECHO)), "{shown}");
        assert!(shown.ends_with("…(4096 chars)"), "{shown}");
        assert!(shown.chars().count() < MAX_ECHO + 20);
        assert_eq!(Echo("a\nb\u{1b}[31m").to_string(), "a\\nb\\u{1b}[31m");
        let h = header(&[b'x'; 10_000]);
        assert!(h.len() < 300 && h.ends_with("(10000 bytes)"), "{h}");
    }
}
