//! Twilio `StatusCallback` receipts for the HTTP provider's Twilio recipe: a daemon sends
//! through the fake Twilio API, then the status callback arrives signed the way Twilio signs
//! (`X-Twilio-Signature`, computed here with this file's own HMAC-SHA1 code) and moves the
//! delivery; unsigned, mis-signed, tampered and misdirected callbacks are refused.

use crate::common;

use base64::Engine;
use common::daemon::TestDaemon;
use common::fake_sms_apis::{self as apis};
use figment::Figment;
use figment::providers::{Format, Toml};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha1::Sha1;
use verifyd::config::{Backend, Config};

const PUBLIC: &str = "https://verify.example.com/v1/receipts/twilio/status";

fn recipe() -> String {
    let readme = include_str!("../../docs/providers.md");
    let marker = "```toml\n# recipe: twilio\n";
    let start = readme
        .find(marker)
        .expect("docs/providers.md has the twilio recipe")
        + "```toml\n".len();
    let len = readme[start..].find("```").unwrap();
    readme[start..start + len].to_owned()
}

/// Twilio's algorithm, written out here: URL, then each name and value sorted by name.
fn twilio_sign(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_status_callbacks_move_the_delivery_and_forgeries_do_not() {
    let fake = apis::start_twilio().await;
    let text = recipe()
        .replace("ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", apis::TWILIO_SID)
        .replace("+15017122661", apis::TWILIO_FROM)
        .replace("https://api.twilio.com", &fake.gateway.base());
    let fig = Figment::from(Toml::string(&text)).merge(Toml::string(&format!(
        "[providers.twilio.http]\nsecret = {:?}\ntwilio_status_callback = {PUBLIC:?}\n",
        apis::TWILIO_TOKEN
    )));
    let loaded = Config::from_figment(fig).unwrap_or_else(|e| panic!("{e}"));
    let d = TestDaemon::start(Backend::Sqlite, move |c| {
        c.providers = loaded.providers;
        c.routes = loaded.routes;
    })
    .await
    .unwrap();
    let (_, s) = d.api(Method::POST, "/v1/sessions", None).await;
    let body = json!({ "phone": "+12015550123", "session": s["key"] });
    let (status, sent) = d.api(Method::POST, "/v1/verifications", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let id = sent["id"].as_str().unwrap().to_owned();
    let (_, v) = d
        .api(Method::GET, &format!("/v1/verifications/{id}"), None)
        .await;
    let sid = v["message_id"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("SM"), "{v}");

    let params = [
        ("AccountSid", apis::TWILIO_SID),
        ("MessageSid", sid.as_str()),
        ("SmsSid", sid.as_str()),
        ("MessageStatus", "delivered"),
        ("To", "+12015550123"),
        ("ApiVersion", "2010-04-01"),
    ];
    let form = |ps: &[(&str, &str)]| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(ps)
            .finish()
    };
    let post = |path: &str, body: String, sig: Option<String>| {
        let mut req = reqwest::Client::new()
            .post(d.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(sig) = sig {
            req = req.header("x-twilio-signature", sig);
        }
        async move { req.send().await.unwrap().status() }
    };
    let good = twilio_sign(apis::TWILIO_TOKEN, PUBLIC, &params);
    // Forgeries: no signature, another token, a tampered status, the right signature on another
    // path, a signature over the URL the daemon sees rather than the public one.
    let failed: Vec<(&str, &str)> = params
        .iter()
        .map(|&(k, v)| {
            if k == "MessageStatus" {
                (k, "failed")
            } else {
                (k, v)
            }
        })
        .collect();
    for (path, body, sig) in [
        ("/v1/receipts/twilio/status", form(&params), None),
        (
            "/v1/receipts/twilio/status",
            form(&params),
            Some(twilio_sign("other-token", PUBLIC, &params)),
        ),
        (
            "/v1/receipts/twilio/status",
            form(&failed),
            Some(good.clone()),
        ),
        (
            "/v1/receipts/twilio/other",
            form(&params),
            Some(good.clone()),
        ),
        (
            "/v1/receipts/twilio/status",
            form(&params),
            Some(twilio_sign(
                apis::TWILIO_TOKEN,
                &d.url("/v1/receipts/twilio/status"),
                &params,
            )),
        ),
    ] {
        assert_eq!(post(path, body, sig).await, StatusCode::NOT_FOUND, "{path}");
    }
    let (_, v) = d
        .api(Method::GET, &format!("/v1/verifications/{id}"), None)
        .await;
    assert_eq!(v["delivery"]["state"], "queued", "{v}");

    assert_eq!(
        post(
            "/v1/receipts/twilio/status",
            form(&params),
            Some(good.clone())
        )
        .await,
        StatusCode::OK
    );
    let (_, v) = d
        .api(Method::GET, &format!("/v1/verifications/{id}"), None)
        .await;
    assert_eq!(v["delivery"]["state"], "delivered", "{v}");
    // A signed but late `sent` does not move it back.
    let late: Vec<(&str, &str)> = params
        .iter()
        .map(|&(k, v)| {
            if k == "MessageStatus" {
                (k, "sent")
            } else {
                (k, v)
            }
        })
        .collect();
    let sig = twilio_sign(apis::TWILIO_TOKEN, PUBLIC, &late);
    assert_eq!(
        post("/v1/receipts/twilio/status", form(&late), Some(sig)).await,
        StatusCode::OK
    );
    let (_, v) = d
        .api(Method::GET, &format!("/v1/verifications/{id}"), None)
        .await;
    assert_eq!(v["delivery"]["state"], "delivered");
    d.stop().await;
}
