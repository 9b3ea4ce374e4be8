//! A page on another origin using verifyd from a real browser: CORS with credentials. The
//! daemon allows one origin in `http.cors.allowed_origins`; a page served from it goes through
//! the whole flow, the same page served from a second port is refused. And another site's
//! `<img>` and link aimed at `GET /sms_send/` (cross-site request forgery) are refused.

use crate::common;

use common::browser::{available, run_scenario};
use common::daemon::TestDaemon;
use common::fake_server::{Answer, FakeServer};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use std::sync::Arc;
use tokio::net::TcpListener;
use verifyd::config::{Backend, Config};

/// The demo page, pointed at a verifyd on another origin (its `data-api` attribute).
fn page_for(api: &str) -> String {
    let page = include_str!("../../src/http/demo.html");
    let marked = r#"<html lang="en" data-api="">"#;
    assert!(
        page.contains(marked),
        "demo.html names its API base on <html>"
    );
    page.replacen(marked, &format!(r#"<html lang="en" data-api="{api}">"#), 1)
}

/// A static server answering every request with `page`: a customer's web site.
async fn serve_page(page: String) -> (String, FakeServer) {
    async fn answer(page: Arc<String>, _: Request<Incoming>) -> Answer {
        Ok(Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .body(Full::new(Bytes::from(page.as_str().to_owned())))
            .unwrap())
    }
    let site = FakeServer::start(Arc::new(page), answer).await;
    (format!("http://{}", site.addr), site)
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
    let _one = super::ONE_BROWSER.lock().await;
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
    drop((allowed_site, other_site));
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
    let _one = super::ONE_BROWSER.lock().await;
    let d = TestDaemon::start(Backend::Sqlite, |c| c.http.demo_page = true)
        .await
        .unwrap();
    let (pixel_phone, link_phone) = ("+447400900123", "+447400900124");
    // `localhost` and `127.0.0.1` are different sites to the browser.
    let (site, site_server) = serve_page(attack_page(&d.base, pixel_phone, link_phone)).await;
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
    drop(site_server);
    d.stop().await;
}
