//! The real `verifyd` binary as a child process, for the fault tests that must kill it (`kill -9`)
//! or watch that it does not exit. Each child gets a TOML file of its own, logs to a file, and is
//! killed when its guard is dropped so a failing test leaves nothing behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_verifyd");

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `verifyd serve`.
pub struct Proc {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Proc {
    /// Writes `toml` to `dir/<name>.toml` and starts the daemon on it; waits until `/healthz`
    /// answers (at most 20 s).
    pub async fn spawn(dir: &Path, name: &str, port: u16, toml: &str) -> Proc {
        Self::spawn_with(dir, name, port, toml, &[], None).await
    }

    /// [`Proc::spawn`] with extra environment variables and, when given, the file-creation mask
    /// the daemon starts under (set by a shell, as an operator's shell would).
    pub async fn spawn_with(
        dir: &Path,
        name: &str,
        port: u16,
        toml: &str,
        env: &[(&str, &str)],
        umask: Option<u32>,
    ) -> Proc {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = match umask {
            Some(mask) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("umask {mask:03o} && exec \"$0\" \"$@\""))
                    .arg(BIN);
                sh
            }
            None => Command::new(BIN),
        };
        cmd.current_dir(dir).env_remove("RUST_LOG");
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("VERIFYD_") || k == "CREDENTIALS_DIRECTORY" {
                cmd.env_remove(k.as_ref());
            }
        }
        let child = cmd
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn verifyd");
        let mut p = Proc { child, port, log };
        p.wait_healthy().await;
        p
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `None` while the process runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let url = format!("{}/healthz", self.base());
            if let Ok(r) = client.get(url).send().await {
                assert_eq!(r.status(), reqwest::StatusCode::OK);
                return;
            }
            if let Some(status) = self.exited() {
                panic!("verifyd exited early ({status}): {}", self.log_text());
            }
            assert!(Instant::now() < deadline, "verifyd did not come up");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL verifyd");
        self.child.wait().expect("reap verifyd");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
