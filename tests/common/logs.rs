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
