//! A page on another origin using verifyd from a real browser: CORS with credentials. The
//! daemon allows one origin in `http.cors.allowed_origins`; a page served from it goes through
//! the whole flow, the same page served from a second port is refused. And another site's
//! `<img>` and link aimed at `GET /sms_send/` (cross-site request forgery) are refused.

mod common;

use common::browser::{available, run_scenario};
use common::daemon::TestDaemon;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use verifyd::config::{Backend, Config};

/// The demo page, pointed at a verifyd on another origin (its `data-api` attribute).
fn page_for(api: &str) -> String {
    let page = include_str!("../src/http/demo.html");
    let marked = r#"<html lang="en" data-api="">"#;
    assert!(
        page.contains(marked),
        "demo.html names its API base on <html>"
    );
    page.replacen(marked, &format!(r#"<html lang="en" data-api="{api}">"#), 1)
}

/// A static server answering every request with `page`: a customer's web site.
async fn serve_page(page: String) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let page = Arc::new(page);
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    (origin, task)
}

/// Sets `http.cors.allowed_origins` through the configuration loader, as a config file would.
fn allow_origin(c: &mut Config, origin: &str) {
    let fig = Figment::from(Serialized::defaults(&*c)).merge(Toml::string(&format!(
        "[http.cors]\nallowed_origins = [\"{origin}\"]\n"
    )));
    *c = Config::from_figment(fig).expect("http.cors.allowed_origins is a known key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_allowed_origin_may_call_the_api_with_credentials() {
    if !available("only_an_allowed_origin_may_call_the_api_with_credentials") {
        return;
    }
    // The pages name the daemon's address and the daemon's config names a page's origin: pick
    // the daemon's port first (bind, read, release), then start the sites, then the daemon.
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_port = probe.local_addr().unwrap().port();
    drop(probe);
    let api = format!("http://127.0.0.1:{api_port}");
    let (allowed, allowed_site) = serve_page(page_for(&api)).await;
    let (other, other_site) = serve_page(page_for(&api)).await;
    let d = TestDaemon::start(Backend::Sqlite, |c| {
        c.http.listen = format!("127.0.0.1:{api_port}").parse().unwrap();
        allow_origin(c, &allowed);
    })
    .await
    .unwrap();
    assert_eq!(d.base, api);

    let (phone, refused) = ("+8613800138000", "+8613800138009");
    let env = [
        ("VERIFYD_URL", d.base.clone()),
        ("OUTBOX", d.outbox.display().to_string()),
        ("ALLOWED_PAGE", format!("{allowed}/")),
        ("OTHER_PAGE", format!("{other}/")),
        ("PHONES", format!("{phone},{refused}")),
    ];
    run_scenario("cross_origin", &env).await;

    let to: Vec<_> = d.messages().iter().map(|m| m["to"].clone()).collect();
    assert_eq!(to, [phone], "the refused origin sent nothing");
    allowed_site.abort();
    other_site.abort();
    d.stop().await;
}

/// An attacker's page: an image and a link that ask verifyd for codes to the attacker's numbers.
fn attack_page(api: &str, pixel_phone: &str, link_phone: &str) -> String {
    let enc = |p: &str| p.replace('+', "%2B");
    format!(
        "<!doctype html><html lang=\"en\"><head><title>Prizes</title></head><body>\
         <h1>You won!</h1>\
         <img alt=\"\" src=\"{api}/sms_send/?phone={}\">\
         <p><a href=\"{api}/sms_send/?phone={}\">Claim your prize</a></p></body></html>",
        enc(pixel_phone),
        enc(link_phone)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sites_image_and_link_cannot_send_codes() {
    if !available("another_sites_image_and_link_cannot_send_codes") {
        return;
    }
    let d = TestDaemon::start(Backend::Sqlite, |c| c.http.demo_page = true)
        .await
        .unwrap();
    let (pixel_phone, link_phone) = ("+447400900123", "+447400900124");
    // `localhost` and `127.0.0.1` are different sites to the browser.
    let (site, site_task) = serve_page(attack_page(&d.base, pixel_phone, link_phone)).await;
    let attack = site.replace("127.0.0.1", "localhost");
    let victim = "+8613800138000";
    let env = [
        ("VERIFYD_URL", d.base.clone()),
        ("OUTBOX", d.outbox.display().to_string()),
        ("ATTACK_PAGE", format!("{attack}/")),
        ("VICTIM", victim.to_owned()),
        ("ATTACKER_PHONES", format!("{pixel_phone},{link_phone}")),
    ];
    run_scenario("csrf", &env).await;
    let to: Vec<_> = d.messages().iter().map(|m| m["to"].clone()).collect();
    assert_eq!(to, [victim], "only the victim's own code was sent");
    // Both the image and the link reached verifyd and were refused there.
    let metrics = d.daemon.as_ref().unwrap().app.metrics.render(None, []);
    let refused = r#"verifyd_http_requests_total{method="GET",route="/sms_send/",status="403"} 2"#;
    assert!(metrics.lines().any(|l| l == refused), "{metrics}");
    site_task.abort();
    d.stop().await;
}
