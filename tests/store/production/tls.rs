//! TLS to PostgreSQL: each `sslmode` against a server with `ssl = on` and certificates from a
//! CA the test made, and against a server without TLS. A refused connection must stop the
//! daemon at start-up with a message that names the cause.

use super::{daemon_on, phone, start_error};
use crate::common::certs::{Ca, Issued};
use crate::common::cluster::{Cluster, give_to_postgres};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A running cluster with `ssl = on` (certificate for `localhost` only), the CA that signed it,
/// a CA that did not, and a client certificate for `certuser`, who may log in only with it.
struct TlsCluster {
    cluster: Cluster,
    ca: Ca,
    rogue: Ca,
    client: Issued,
}

fn tls_cluster() -> Option<TlsCluster> {
    let cluster = Cluster::init()?;
    let dir = cluster.dir().join("certs");
    std::fs::create_dir(&dir).unwrap();
    let ca = Ca::new(&dir, "ca");
    let rogue = Ca::new(&dir, "rogue");
    let server = ca.server("server", "DNS:localhost");
    let client = ca.client("client", "certuser");
    // Both sides refuse a key others may read (the server reads its own as `postgres`).
    for key in [&server.key, &client.key] {
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for p in [&dir, &server.key, &server.cert, &ca.cert] {
        give_to_postgres(p);
    }
    cluster.conf(&format!(
        "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\n",
        server.cert.display(),
        server.key.display(),
        ca.cert.display()
    ));
    cluster.hba(
        "local all all trust\n\
         hostssl all certuser 127.0.0.1/32 cert\n\
         host all certuser 127.0.0.1/32 reject\n\
         host all all 127.0.0.1/32 trust\n",
    );
    cluster.start();
    cluster.psql("CREATE ROLE certuser LOGIN");
    cluster.psql("CREATE DATABASE certdb OWNER certuser");
    Some(TlsCluster {
        cluster,
        ca,
        rogue,
        client,
    })
}

/// Whether every connection the daemon holds (application name `verifyd`) uses TLS, and how
/// many there are.
fn daemon_connections(c: &Cluster) -> (usize, bool) {
    let out = c.psql(
        "SELECT count(*) || ',' || coalesce(bool_and(s.ssl), false) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'verifyd'",
    );
    let (n, all) = out.split_once(',').unwrap();
    (n.parse().unwrap(), all == "true")
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_right_ca_serves_the_whole_flow_over_tls() {
    let Some(t) = tls_cluster() else { return };
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        t.cluster.port,
        p(&t.ca.cert)
    );
    let d = daemon_on(&url, |_| {}).await;
    let mut b = d.browser();
    let number = phone(1, 1);
    let (status, body) = b.send_code(&number).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    let code = d.last_code(&number).unwrap();
    b.wrong_then_right(&number, &code).await;
    let (n, all_tls) = daemon_connections(&t.cluster);
    assert!(
        n > 0 && all_tls,
        "{n} daemon connections, all over TLS: {all_tls}"
    );
    d.stop().await;

    // A user the server admits only with a client certificate signed by its CA.
    let url = format!(
        "postgres://certuser@localhost:{}/certdb?sslmode=verify-full&sslrootcert={}&sslcert={}\
         &sslkey={}",
        t.cluster.port,
        p(&t.ca.cert),
        p(&t.client.cert),
        p(&t.client.key)
    );
    let d = daemon_on(&url, |_| {}).await;
    let mut b = d.browser();
    let number = phone(1, 2);
    let (status, body) = b.send_code(&number).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    let code = d.last_code(&number).unwrap();
    b.wrong_then_right(&number, &code).await;
    assert_eq!(
        t.cluster
            .psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'certuser'")
            .parse::<u32>()
            .unwrap()
            .min(1),
        1
    );
    d.stop().await;

    // `prefer`, the default, encrypts when the server offers TLS (without checking whom).
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", t.cluster.port);
    let d = daemon_on(&url, |_| {}).await;
    let (status, _) = d.browser().send_code(&phone(1, 3)).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    let (n, all_tls) = daemon_connections(&t.cluster);
    assert!(
        n > 0 && all_tls,
        "prefer: {n} connections, all over TLS: {all_tls}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_tls_cannot_vouch_for_stops_the_daemon_at_start_up_with_the_cause() {
    let Some(t) = tls_cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = t.cluster.port;

    let wrong_ca = format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        p(&t.rogue.cert)
    );
    let e = start_error(&wrong_ca, dir.path()).await;
    eprintln!("wrong CA: {e}");
    assert!(e.contains("not signed by a CA in sslrootcert="), "{e}");
    assert!(e.contains("unknown CA"), "{e}");
    // verify-ca checks the chain too, and `require` does once it is given a CA (as in libpq).
    for mode in ["verify-ca", "require"] {
        let e = start_error(&wrong_ca.replace("verify-full", mode), dir.path()).await;
        assert!(e.contains("unknown CA"), "{mode}: {e}");
    }

    // The operating system's CAs (verify-full by default with `system`) did not sign it either.
    let system = format!("postgres://postgres@localhost:{port}/postgres?sslrootcert=system");
    let e = start_error(&system, dir.path()).await;
    assert!(
        e.contains("not signed by a CA in sslrootcert=system (unknown CA)"),
        "{e}"
    );

    // The certificate names `localhost`; the URL says 127.0.0.1.
    let by_ip = format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        p(&t.ca.cert)
    );
    let e = start_error(&by_ip, dir.path()).await;
    eprintln!("wrong host: {e}");
    assert!(e.contains("host name mismatch"), "{e}");
    assert!(e.contains("\"127.0.0.1\""), "{e}");
    // verify-ca does not check the name, so the same URL starts.
    let d = daemon_on(&by_ip.replace("verify-full", "verify-ca"), |_| {}).await;
    assert_eq!(
        d.browser().send_code(&phone(2, 1)).await.0,
        reqwest::StatusCode::ACCEPTED
    );
    d.stop().await;

    // certuser without a client certificate is refused by the server.
    let no_cert = format!(
        "postgres://certuser@localhost:{port}/certdb?sslmode=verify-full&sslrootcert={}",
        p(&t.ca.cert)
    );
    let e = start_error(&no_cert, dir.path()).await;
    eprintln!("no client certificate: {e}");
    assert!(e.contains("certificate"), "{e}");

    // Files that cannot be read are named before anything connects.
    let missing_key = format!(
        "{no_cert}&sslcert={}&sslkey={}",
        p(&t.client.cert),
        p(&dir.path().join("missing.key"))
    );
    let e = start_error(&missing_key, dir.path()).await;
    assert!(e.contains("store.postgres.url: sslkey="), "{e}");
    assert!(e.contains("missing.key: cannot read a private key"), "{e}");
    let garbage_key = dir.path().join("garbage.key");
    std::fs::write(&garbage_key, "not a key").unwrap();
    std::fs::set_permissions(&garbage_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = start_error(
        &format!(
            "{no_cert}&sslcert={}&sslkey={}",
            p(&t.client.cert),
            p(&garbage_key)
        ),
        dir.path(),
    )
    .await;
    assert!(e.contains("garbage.key: cannot read a private key"), "{e}");
    // The right key, but readable by everyone: libpq refuses it, so does verifyd.
    let shared_key = dir.path().join("shared.key");
    std::fs::copy(&t.client.key, &shared_key).unwrap();
    std::fs::set_permissions(&shared_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = start_error(
        &format!(
            "{no_cert}&sslcert={}&sslkey={}",
            p(&t.client.cert),
            p(&shared_key)
        ),
        dir.path(),
    )
    .await;
    assert!(
        e.contains("group or others may access it (mode 644)"),
        "{e}"
    );
    // Another key than the certificate's.
    let other = t.rogue.client("other", "certuser");
    std::fs::set_permissions(&other.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = start_error(
        &format!(
            "{no_cert}&sslcert={}&sslkey={}",
            p(&t.client.cert),
            p(&other.key)
        ),
        dir.path(),
    )
    .await;
    assert!(e.contains("sslcert/sslkey"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_a_server_without_tls_and_prefer_falls_back_to_plaintext() {
    let Some(cluster) = Cluster::init() else {
        return;
    };
    cluster.start();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}?sslmode=require", cluster.url());
    let e = start_error(&url, dir.path()).await;
    eprintln!("require without TLS: {e}");
    assert!(e.contains("server does not support TLS"), "{e}");

    // libpq's default: try TLS, use plaintext when the server has none — and say so.
    let logs = crate::common::logs::capture("warn");
    let d = daemon_on(&cluster.url(), |_| {}).await;
    assert_eq!(
        d.browser().send_code(&phone(3, 1)).await.0,
        reqwest::StatusCode::ACCEPTED
    );
    let (n, all_tls) = daemon_connections(&cluster);
    assert!(n > 0 && !all_tls, "{n} connections, TLS: {all_tls}");
    let plaintext = format!("host=\"127.0.0.1\" port={}", cluster.port);
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("PostgreSQL connection without TLS") && l.contains(&plaintext)),
        "no warning about the plaintext connection:\n{text}"
    );
    d.stop().await;
}
