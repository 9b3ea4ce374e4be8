//! Slow and surplus clients: a slowloris connection (headers trickled a line at a time) is cut
//! after `http.header_timeout` however steadily it trickles; connections beyond
//! `http.max_connections` are closed at accept instead of piling up, and closing them frees their
//! file descriptors; once the hogs are gone the daemon serves normally again.

use crate::common;

use common::daemon::TestDaemon;
use reqwest::StatusCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use verifyd::config::Backend;

async fn daemon(header_timeout: u64, max_connections: usize) -> TestDaemon {
    TestDaemon::start(Backend::Sqlite, |c| {
        c.http.header_timeout = header_timeout;
        c.http.max_connections = max_connections;
    })
    .await
    .expect("SQLite daemons always start")
}

fn addr(d: &TestDaemon) -> String {
    d.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes (EOF or reset); returns when, or `None` after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Descriptors of this process for sockets on the daemon's `port`: its listener and the
/// connections it holds. Other tests of this binary open and close descriptors meanwhile, so
/// counting every descriptor would measure them too.
fn daemon_sockets(port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields[1].rsplit(':').next().unwrap();
            if u16::from_str_radix(local_port, 16) == Ok(port) {
                inodes.insert(format!("socket:[{}]", fields[9]));
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| inodes.contains(target.to_string_lossy().as_ref()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_are_cut_at_the_header_timeout() {
    let d = daemon(1, 100).await;
    let started = Instant::now();
    let stream = TcpStream::connect(addr(&d)).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let trickle = tokio::spawn(async move {
        wr.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .ok()?;
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            wr.write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .await
                .ok()?;
        }
        Some(())
    });
    let mut buf = [0u8; 1024];
    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("a trickling client was never cut off");
    trickle.abort();
    assert!(
        cut >= Duration::from_millis(900) && cut < Duration::from_millis(2500),
        "cut after {cut:?} with a 1 s header timeout"
    );
    // The daemon itself is fine.
    let r = d.http.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surplus_connections_are_closed_and_cost_nothing() {
    const MAX: usize = 4;
    let d = daemon(3, MAX).await;
    let a = addr(&d);
    // Fill every slot with a client that has started a request and stalls.
    let mut hogs = Vec::new();
    for _ in 0..MAX {
        let mut s = TcpStream::connect(&a).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        hogs.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let port = d.daemon.as_ref().unwrap().addr.port();
    let baseline = daemon_sockets(port);
    assert!(baseline > MAX, "the hogs' connections are seen: {baseline}");

    // Every further connection is accepted by the kernel and closed by the daemon at once.
    let mut surplus = Vec::new();
    for _ in 0..200 {
        surplus.push(TcpStream::connect(&a).await.unwrap());
    }
    for s in &mut surplus {
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        assert!(
            closed_within(s, Duration::from_millis(1000))
                .await
                .is_some(),
            "a connection beyond max_connections was kept open"
        );
    }
    drop(surplus);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = daemon_sockets(port);
    assert!(
        after <= baseline + 2,
        "the daemon's sockets grew from {baseline} to {after} after refusing 200 connections"
    );

    // The hogs are cut at the header timeout, which frees their slots.
    for s in &mut hogs {
        assert!(
            closed_within(s, Duration::from_secs(5)).await.is_some(),
            "a stalled connection outlived the header timeout"
        );
    }
    drop(hogs);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = d.http.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    d.stop().await;
}
