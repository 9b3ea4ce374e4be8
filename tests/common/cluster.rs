//! Private PostgreSQL clusters for tests that must reconfigure, stop, freeze or promote a server,
//! which the shared cluster other tests use must never suffer: `initdb` in a temp dir, run as
//! the `postgres` user (the server refuses root) on a free port, with its socket in that dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::free_port;

/// One cluster; stopped (immediately) when dropped.
pub struct Cluster {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A new, stopped cluster with trust authentication. `None` (after a loud SKIPPED line)
    /// when this machine cannot run one; under `CI=true` that is a failure instead.
    pub fn init() -> Option<Cluster> {
        let ci = std::env::var("CI").as_deref() == Ok("true");
        let skip = |why: String| {
            assert!(!ci, "cannot run a private PostgreSQL cluster: {why}");
            eprintln!("\n*** SKIPPED: cannot run a private PostgreSQL cluster: {why} ***\n");
            None
        };
        let Some(bin) = newest_pg_bin() else {
            return skip("no /usr/lib/postgresql/*/bin".into());
        };
        let dir = match owned_dir() {
            Ok(d) => d,
            Err(why) => return skip(why),
        };
        let data = dir.path().join("data");
        let out = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        if !out.status.success() {
            return skip(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let c = Cluster {
            bin,
            data,
            port: free_port(),
            dir,
        };
        c.conf(&format!(
            "fsync = off\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             port = {}\n",
            c.dir.path().display(),
            c.port
        ));
        Some(c)
    }

    /// A standby of `primary` (which must be running): `pg_basebackup -R`, so it starts in
    /// recovery and streams from the primary. Not started.
    pub fn standby_of(primary: &Cluster) -> Cluster {
        let dir = owned_dir().expect("a directory for the standby");
        let data = dir.path().join("data");
        let out = as_postgres(&primary.bin.join("pg_basebackup"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ])
            .args(["-p", &primary.port.to_string(), "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let c = Cluster {
            bin: primary.bin.clone(),
            data,
            port: free_port(),
            dir,
        };
        // Later lines win: the standby gets its own port and socket directory.
        c.conf(&format!(
            "unix_socket_directories = '{}'\nport = {}\n",
            c.dir.path().display(),
            c.port
        ));
        c
    }

    /// The directory around the data directory (owned by `postgres`), for certificates.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Appends settings to `postgresql.conf`.
    pub fn conf(&self, lines: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .unwrap();
        writeln!(f, "{lines}").unwrap();
    }

    /// Replaces `pg_hba.conf`.
    pub fn hba(&self, lines: &str) {
        std::fs::write(self.data.join("pg_hba.conf"), lines).unwrap();
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        self.pg_ctl(&["start"]);
    }

    /// `pg_ctl stop -m <mode>` (`immediate` is a crash as far as the data is concerned).
    pub fn stop(&self, mode: &str) {
        self.pg_ctl(&["-m", mode, "stop"]);
    }

    /// Ends recovery on a standby; returns once it accepts writes.
    pub fn promote(&self) {
        self.pg_ctl(&["promote"]);
    }

    /// Runs SQL through `psql` over TCP and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = as_postgres(&self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-XtAq",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// SIGSTOP to the postmaster and every backend: the server stops answering while its
    /// sockets stay open, as a hung host or a network partition looks to a client.
    pub fn freeze(&self) {
        assert!(self.signal("-STOP"), "the server is not running");
    }

    /// SIGCONT after [`Cluster::freeze`].
    pub fn thaw(&self) {
        assert!(self.signal("-CONT"), "the server is not running");
    }

    /// Signals the postmaster and its children; false when the server is not running.
    fn signal(&self, sig: &str) -> bool {
        let Ok(pid_file) = std::fs::read_to_string(self.data.join("postmaster.pid")) else {
            return false;
        };
        let Some(postmaster) = pid_file.lines().next().and_then(|l| l.trim().parse().ok()) else {
            return false;
        };
        let mut pids = vec![postmaster];
        pids.extend(children(postmaster));
        // A crashed server leaves its pid file behind; `kill` then finds nobody.
        Command::new("kill")
            .arg(sig)
            .args(pids.iter().map(u32::to_string))
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn pg_ctl(&self, args: &[&str]) {
        let log = self.dir.path().join("postgres.log");
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Waits until `sql` returns `want` (a standby catching up, say); panics after 30 s.
    pub fn wait_for(&self, sql: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.psql(sql) == want {
                return;
            }
            assert!(Instant::now() < deadline, "{sql:?} never returned {want:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A frozen server ignores everything but SIGCONT.
        self.signal("-CONT");
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// Hands `path` to the `postgres` user (a key file the server reads must be its own).
pub fn give_to_postgres(path: &Path) {
    let (uid, gid) = (id("-u").unwrap(), id("-g").unwrap());
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

fn owned_dir() -> Result<tempfile::TempDir, String> {
    let (uid, gid) = match (id("-u"), id("-g")) {
        (Some(u), Some(g)) => (u, g),
        _ => return Err("no `postgres` user".into()),
    };
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
        .map_err(|e| format!("cannot hand a directory to `postgres` (not root?): {e}"))?;
    Ok(dir)
}

/// Direct children of `pid`, from `/proc/*/stat` (field 4 is the parent).
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // The command name is in parentheses and may contain spaces.
            let after = &stat[stat.rfind(')')? + 2..];
            let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

fn newest_pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn id(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(program);
    c
}
