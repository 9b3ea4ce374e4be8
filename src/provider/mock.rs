//! The mock provider: prints each message as one JSON line on stdout (and optionally appends it to
//! an outbox file) instead of sending it, for development and CI. Showing the code is its job.

use async_trait::async_trait;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use super::{OutgoingCode, Provider, ProviderError, Receipt};

/// One outbox line: `{"provider":"mock","to":…,"code":…,"text":…}`, in that order.
#[derive(serde::Serialize)]
struct Line<'a> {
    provider: &'static str,
    to: &'a str,
    code: &'a str,
    text: &'a str,
}

pub struct MockProvider {
    outbox: Option<Mutex<std::fs::File>>,
    quiet: bool,
    seq: std::sync::atomic::AtomicU64,
}

impl MockProvider {
    /// Opens (creating or appending) the outbox file when one is configured.
    pub fn new(outbox: Option<&PathBuf>, quiet: bool) -> std::io::Result<Self> {
        let outbox = match outbox {
            // The outbox holds codes: owner-only, like the database.
            Some(p) => Some(Mutex::new(crate::private_file::open_append(p)?)),
            None => None,
        };
        Ok(Self {
            outbox,
            quiet,
            seq: Default::default(),
        })
    }
}

#[async_trait]
impl Provider for MockProvider {
    async fn send(&self, msg: &OutgoingCode) -> Result<Receipt, ProviderError> {
        let mut line = serde_json::to_string(&Line {
            provider: "mock",
            to: msg.to.as_str(),
            code: msg.code.expose(),
            text: &msg.text,
        })
        .expect("strings always serialize");
        line.push('\n');
        if !self.quiet {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| ProviderError::Transient(format!("mock stdout: {e}")))?;
        }
        if let Some(file) = &self.outbox {
            let mut f = file
                .lock()
                .map_err(|_| ProviderError::Transient("mock outbox lock".into()))?;
            f.write_all(line.as_bytes())
                .map_err(|e| ProviderError::Transient(format!("mock outbox: {e}")))?;
        }
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        Ok(Receipt {
            provider: "mock".into(),
            // Random as well as counted, so that daemons sharing a store never repeat an id.
            message_id: Some(format!("mock-{}-{n}", hex::encode(random_bytes()))),
        })
    }
}

fn random_bytes() -> [u8; 8] {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random generator is unavailable");
    b
}
