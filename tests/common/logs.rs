//! Captures the log lines a test binary writes, to check what reaches (and never reaches) logs.

use std::sync::{Arc, Mutex, OnceLock};

/// Everything the global subscriber wrote so far.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// Installs (once per test binary) a global subscriber with `filter` that records every event;
/// later calls return the same capture whatever their filter, so every test of one binary asks
/// for the same filter. The capture holds every test's lines: a test looks for its own.
pub fn capture(filter: &str) -> Capture {
    static LOGS: OnceLock<Capture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let c = Capture::default();
        let _ = tracing_subscriber::fmt()
            .with_writer(c.clone())
            .with_env_filter(filter)
            .with_ansi(false)
            .try_init();
        c
    })
    .clone()
}

/// Whether `code` stands in `text` the way a leaked code would: as a whole run of digits, not
/// as the fraction of a number. Every log line carries other digits (a timestamp's
/// microseconds, a latency's fraction, the SDK's ids), and since a capture holds the lines of a
/// whole test binary, a six-digit code is a window of some of them once in a few hundred runs:
/// a plain substring search fails by chance (it did, in CI).
pub fn mentions_code(text: &str, code: &str) -> bool {
    let bytes = text.as_bytes();
    text.match_indices(code).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + code.len()).copied();
        !matches!(before, Some(b) if b.is_ascii_digit() || b == b'.')
            && !matches!(after, Some(b) if b.is_ascii_digit())
    })
}

#[test]
fn a_code_is_told_from_the_digits_around_it() {
    assert!(mentions_code("message=\"Your code is 123456.\"", "123456"));
    assert!(mentions_code("code=123456", "123456"));
    assert!(mentions_code("123456", "123456"));
    assert!(!mentions_code("2026-12-01T05:13:34.123456Z", "123456"));
    assert!(!mentions_code("latency_ms=19.123456", "123456"));
    assert!(!mentions_code("sdk_invocation_id=1234567", "123456"));
    assert!(!mentions_code("tv_nsec: 9123456", "123456"));
}
