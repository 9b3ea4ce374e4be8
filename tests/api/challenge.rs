//! Challenges before sending, attacked over real HTTP: ALTCHA payloads solved by ALTCHA's own
//! Python library (and forged, wrong, self-signed, expired and replayed ones, also across two
//! daemons on one database), on both stores; Turnstile and hCaptcha tokens checked against a
//! fake of their documented `siteverify` (valid, invalid, replayed, another site, a wrong
//! secret, a provider that is down or stalls).

use crate::common;
use verifyd::seconds::Seconds;

use common::altcha_py;
use common::daemon::TestDaemon;
use common::fake_siteverify::{FakeSiteverify, Mode, Provider};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use verifyd::challenge::config::ChallengeKind;
use verifyd::config::{Backend, ChallengeMode, Config};
use verifyd::secret::Secret;

const KEY: &str = "challenge-test-hmac-key";
const CN: &str = "+8613800138000";

/// No abuse limit in the way, and a known ALTCHA key (so the Python library can check the
/// daemon's signatures). Small challenges keep the Python solver quick.
fn altcha(c: &mut Config) {
    c.per_phone.max_sends = 0;
    c.per_phone.daily_max = 0;
    c.per_ip.max_sends = 0;
    c.global.max_sends_per_hour = 0;
    c.pumping.enabled = false;
    c.verification.resend_interval = 1;
    c.challenge.altcha.hmac_key = Secret::new(KEY);
    c.challenge.altcha.max_number = 5_000;
}

async fn challenge(d: &TestDaemon) -> Value {
    let resp = d.http.get(d.url("/v1/challenge")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    resp.json().await.unwrap()
}

/// A browser's first send (no cookie) with `extra` fields in the JSON body.
async fn send(d: &TestDaemon, phone: &str, extra: Value) -> (StatusCode, Value) {
    let mut body = json!({ "phone": phone });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let resp = d
        .http
        .post(d.url("/v1/verifications"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Solves a daemon's ALTCHA challenge by brute force, as any client would (no Python needed).
fn solve(c: &Value) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let salt = c["salt"].as_str().unwrap();
    let target = c["challenge"].as_str().unwrap();
    let number = (0..=c["maxnumber"].as_u64().unwrap())
        .find(|n| hex::encode(Sha256::digest(format!("{salt}{n}"))) == target)
        .expect("an issued challenge has a solution");
    let payload = json!({
        "algorithm": c["algorithm"], "challenge": c["challenge"], "number": number,
        "salt": c["salt"], "signature": c["signature"],
    });
    base64::engine::general_purpose::STANDARD.encode(payload.to_string())
}

/// The value of `verifyd_challenge_solutions_total{outcome=…}` on the API port.
async fn solutions(d: &TestDaemon, outcome: &str) -> u64 {
    let text = d
        .http
        .get(d.url("/metrics"))
        .bearer_auth(common::daemon::API_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("verifyd_challenge_solutions_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// 428 `challenge_required`, naming where to get one.
fn assert_required(answer: &(StatusCode, Value)) {
    let (status, body) = answer;
    assert_eq!(*status, StatusCode::PRECONDITION_REQUIRED, "{body}");
    assert_eq!(body["error"], "challenge_required", "{body}");
    assert_eq!(body["challenge"], "/v1/challenge", "{body}");
}

fn assert_invalid(answer: &(StatusCode, Value), says: &str) {
    let (status, body) = answer;
    assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "challenge_invalid", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

on_both_stores! {
    async fn altchas_own_library_solves_the_daemons_challenge_and_the_code_goes_out(backend: Backend) {
        if !altcha_py::available("altcha_library_solves") {
            return;
        }
        let Some(d) = TestDaemon::start(backend, altcha).await else { return };
        let c = challenge(&d).await;
        assert_eq!(c["kind"], "altcha");
        assert_eq!(c["field"], "altcha");
        assert_eq!(c["algorithm"], "SHA-256");
        assert_eq!(c["maxnumber"], 5_000);
        assert!(c["salt"].as_str().unwrap().contains("?expires="), "{c}");
        let (_, payload) = altcha_py::solve(&c).await;
        // The library's own verifier accepts what the daemon signed: same protocol, same key.
        assert!(altcha_py::verifies(&payload, KEY).await);
        assert!(!altcha_py::verifies(&payload, "another key").await);

        let (status, body) = send(&d, CN, json!({ "altcha": payload })).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(d.messages().len(), 1);

        // A challenge the library made itself with the daemon's key is as good as one issued.
        let own = altcha_py::create(KEY, 2_000, Some(300)).await;
        let (_, payload) = altcha_py::solve(&own).await;
        let (status, body) = send(&d, "+8613800138001", json!({ "altcha": payload })).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(d.messages().len(), 2);
        d.stop().await;
    }

    async fn forged_wrong_and_unexpiring_altcha_payloads_send_nothing(backend: Backend) {
        if !altcha_py::available("forged_altcha_payloads") {
            return;
        }
        let Some(d) = TestDaemon::start(backend, altcha).await else { return };
        // Signed with a key the attacker made up.
        let forged = altcha_py::create("attacker key", 2_000, Some(300)).await;
        let (_, payload) = altcha_py::solve(&forged).await;
        assert_invalid(&send(&d, CN, json!({ "altcha": payload })).await, "not issued by this server");

        // The daemon's own challenge with a number that does not solve it.
        let c = challenge(&d).await;
        let (number, good) = altcha_py::solve(&c).await;
        let wrong = altcha_py::payload(&c, (number + 1) % 5_001).await;
        assert_invalid(&send(&d, CN, json!({ "altcha": wrong })).await, "does not solve");

        // The daemon's challenge, its salt rewritten to expire later: the hash no longer matches.
        let mut longer = c.clone();
        longer["salt"] = json!(c["salt"].as_str().unwrap().replace("expires=", "expires=9"));
        let stretched = altcha_py::payload(&longer, number).await;
        assert_invalid(&send(&d, CN, json!({ "altcha": stretched })).await, "does not solve");

        // Signed with the right key but without an expiry: usable forever, so never ours.
        let eternal = altcha_py::create(KEY, 2_000, None).await;
        let (_, payload) = altcha_py::solve(&eternal).await;
        assert_invalid(&send(&d, CN, json!({ "altcha": payload })).await, "not issued by this server");

        // Garbage in the field, and a token meant for another kind of challenge.
        assert_invalid(&send(&d, CN, json!({ "altcha": "%%%" })).await, "base64");
        assert_invalid(
            &send(&d, CN, json!({ "cf-turnstile-response": "x" })).await,
            "takes altcha challenges",
        );
        assert!(d.messages().is_empty(), "nothing was sent: {:?}", d.messages());

        // The good payload still works: none of the above spent it.
        let (status, body) = send(&d, CN, json!({ "altcha": good })).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        d.stop().await;
    }

    async fn an_expired_altcha_payload_is_refused(backend: Backend) {
        if !altcha_py::available("expired_altcha_payload") {
            return;
        }
        let Some(d) = TestDaemon::start(backend, altcha).await else { return };
        // Correctly signed and solved, but its expiry (in the signed salt) has passed.
        let old = altcha_py::create(KEY, 2_000, Some(-5)).await;
        let (_, payload) = altcha_py::solve(&old).await;
        assert_invalid(&send(&d, CN, json!({ "altcha": payload })).await, "expired");
        assert!(d.messages().is_empty());
        d.stop().await;
    }

    async fn an_altcha_payload_is_spent_by_its_first_send_on_every_daemon(backend: Backend) {
        if !altcha_py::available("altcha_payload_single_use") {
            return;
        }
        let Some(d1) = TestDaemon::start(backend, altcha).await else { return };
        let d2 = d1.sibling().await;
        let c = challenge(&d1).await;
        let (_, payload) = altcha_py::solve(&c).await;
        // Racing: the same payload to both daemons at once, for different numbers.
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let url = if i % 2 == 0 { d1.url("/v1/verifications") } else { d2.url("/v1/verifications") };
                let http = d1.http.clone();
                let payload = payload.clone();
                tokio::spawn(async move {
                    let resp = http
                        .post(url)
                        .json(&json!({ "phone": format!("+86138001380{i:02}"), "altcha": payload }))
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status();
                    (status, resp.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            let answer = t.await.unwrap();
            if answer.0 == StatusCode::ACCEPTED {
                accepted += 1;
            } else {
                assert_invalid(&answer, "already used");
            }
        }
        assert_eq!(accepted, 1, "exactly one send per solved challenge");
        assert_eq!(d1.messages().len(), 1);
        // Later, on either daemon, with the seed route's form field too.
        assert_invalid(&send(&d2, CN, json!({ "altcha": payload })).await, "already used");
        let resp = d1
            .http
            .post(d1.url("/sms_send/"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("phone", CN)
                    .append_pair("altcha", &payload)
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["Code"], "challenge_invalid", "{body}");
        assert_eq!(d1.messages().len(), 1);
        d2.stop().await;
        d1.stop().await;
    }

    async fn with_mode_always_only_a_solved_challenge_gets_a_browser_its_code(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            altcha(c);
            c.challenge.mode = ChallengeMode::Always;
        })
        .await
        else {
            return;
        };
        // The attacker's script: no solution, then made-up ones, on both send routes.
        assert_required(&send(&d, CN, json!({})).await);
        assert_invalid(&send(&d, CN, json!({ "altcha": "e30=" })).await, "not base64-encoded JSON");
        let resp = d.http.get(d.url(&format!("/sms_send/?phone=%2B{}", &CN[1..]))).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::PRECONDITION_REQUIRED);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["Code"], "challenge_required", "{body}");
        assert!(d.messages().is_empty());

        // A person's browser: fetch, solve, send with the solution (JSON, then the seed form).
        let (status, body) = send(&d, CN, json!({ "altcha": solve(&challenge(&d).await) })).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let payload = solve(&challenge(&d).await);
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("phone", "+8613800138001")
            .append_pair("altcha", &payload)
            .finish();
        let resp = d.http.get(d.url(&format!("/sms_send/?{query}"))).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(d.messages().len(), 2);
        assert_eq!((solutions(&d, "invalid").await, solutions(&d, "passed").await), (1, 2));

        // Backends are never challenged.
        let (s, v) = d.api(reqwest::Method::POST, "/v1/sessions", None).await;
        assert_eq!(s, StatusCode::CREATED);
        let key = v["key"].as_str().unwrap().to_owned();
        let (s, v) = d
            .api(reqwest::Method::POST, "/v1/verifications", Some(json!({"phone": "+8613800138002", "session": key})))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(d.messages().len(), 3);
        d.stop().await;
    }

    async fn a_tripped_breaker_asks_browsers_for_a_challenge_instead_of_refusing(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            altcha(c);
            c.challenge.mode = ChallengeMode::Off;
            c.pumping.enabled = true;
            c.pumping.min_sample = 3;
            c.pumping.min_conversion = 0.5;
        })
        .await
        else {
            return;
        };
        // Pumping: sends to distinct +86 numbers that nobody ever verifies trip the breaker.
        for n in 0..3 {
            let (status, body) = send(&d, &format!("+861380013810{n}"), json!({})).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        }
        // Every browser sending to +86 is now asked for a challenge instead of being refused...
        assert_required(&send(&d, CN, json!({})).await);
        // ...and one who solves it gets the code; other countries are untouched.
        let (status, body) = send(&d, CN, json!({ "altcha": solve(&challenge(&d).await) })).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let (status, body) = send(&d, "+447400900123", json!({})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        // Backends pass without one.
        let (_, v) = d.api(reqwest::Method::POST, "/v1/sessions", None).await;
        let key = v["key"].as_str().unwrap().to_owned();
        let (s, v) = d
            .api(reqwest::Method::POST, "/v1/verifications", Some(json!({"phone": "+8613800138009", "session": key})))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        d.stop().await;

        // With pumping.on_trip = "block" a solution does not help: the country is refused.
        let Some(d) = TestDaemon::start(backend, |c| {
            altcha(c);
            c.challenge.mode = ChallengeMode::Off;
            c.pumping.enabled = true;
            c.pumping.min_sample = 3;
            c.pumping.min_conversion = 0.5;
            c.pumping.on_trip = verifyd::config::OnTrip::Block;
        })
        .await
        else {
            return;
        };
        for n in 0..3 {
            assert_eq!(send(&d, &format!("+861380013810{n}"), json!({})).await.0, StatusCode::ACCEPTED);
        }
        let (status, body) = send(&d, CN, json!({ "altcha": solve(&challenge(&d).await) })).await;
        assert_eq!((status, body["error"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("destination_blocked")), "{body}");
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_turnstile_a_required_challenge_takes_a_token() {
    let fake = FakeSiteverify::start(Provider::Turnstile, "the-secret", "site-key-1").await;
    let d = captcha_daemon(ChallengeKind::Turnstile, &fake, "the-secret", |c| {
        c.challenge.mode = ChallengeMode::Always;
    })
    .await;
    assert_required(&send(&d, CN, json!({})).await);
    assert!(
        fake.seen().is_empty(),
        "nothing to verify, so siteverify is not asked"
    );
    let token = fake.solve("shop.example");
    let (status, body) = send(&d, CN, json!({ "cf-turnstile-response": token })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(d.messages().len(), 1);
    d.stop().await;
}

/// A daemon using `kind` against `fake`, with `hostnames` to check.
async fn captcha_daemon(
    kind: ChallengeKind,
    fake: &FakeSiteverify,
    secret: &str,
    tweak: impl FnOnce(&mut Config),
) -> TestDaemon {
    let url = fake.url();
    let secret = secret.to_owned();
    TestDaemon::start(Backend::Sqlite, move |c| {
        altcha(c);
        c.challenge.kind = kind;
        c.challenge.site_key = "site-key-1".into();
        c.challenge.secret = Secret::new(secret);
        c.challenge.siteverify_url = Some(url);
        c.challenge.hostnames = vec!["shop.example".into()];
        c.challenge.timeout = Seconds::from_millis(700);
        tweak(c);
    })
    .await
    .unwrap()
}

async fn captcha_tokens_are_judged_by_siteverify(provider: Provider) {
    let (kind, field) = match provider {
        Provider::Turnstile => (ChallengeKind::Turnstile, "cf-turnstile-response"),
        Provider::Hcaptcha => (ChallengeKind::Hcaptcha, "h-captcha-response"),
    };
    let fake = FakeSiteverify::start(provider, "the-secret", "site-key-1").await;
    let d = captcha_daemon(kind, &fake, "the-secret", |_| {}).await;
    let c = challenge(&d).await;
    assert_eq!(
        c,
        json!({ "kind": kind.as_str(), "field": field, "site_key": "site-key-1" })
    );

    let token = fake.solve("shop.example");
    let (status, body) = send(&d, CN, json!({ field: token })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // What siteverify got: a form POST with the secret, the token and the person's address.
    let seen = fake.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.method, "POST");
    assert_eq!(
        last.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(last.params["secret"], "the-secret");
    assert_eq!(last.params["response"], token);
    assert_eq!(last.params["remoteip"], "127.0.0.1");
    if provider == Provider::Hcaptcha {
        assert_eq!(last.params["sitekey"], "site-key-1");
    }

    // Replayed, made up, solved on another site, or meant for ALTCHA: refused, nothing sent.
    assert_invalid(
        &send(&d, CN, json!({ field: token })).await,
        "did not accept",
    );
    assert_invalid(
        &send(&d, CN, json!({ field: "made-up" })).await,
        "invalid-input-response",
    );
    let elsewhere = fake.solve("evil.example");
    assert_invalid(
        &send(&d, CN, json!({ field: elsewhere })).await,
        "another site",
    );
    assert_invalid(&send(&d, CN, json!({ "altcha": "eyJ9" })).await, field);
    assert_eq!(d.messages().len(), 1);

    // The provider down, then stalling past the timeout: a prompt 503, not a hang.
    fake.set_mode(Mode::Down);
    let (status, body) = send(&d, CN, json!({ field: fake.solve("shop.example") })).await;
    assert_eq!(
        (status, body["error"].clone()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!("challenge_unavailable")
        ),
        "{body}"
    );
    fake.set_mode(Mode::Stall(Duration::from_secs(20)));
    let started = Instant::now();
    let (status, body) = send(&d, CN, json!({ field: fake.solve("shop.example") })).await;
    assert_eq!(
        (status, body["error"].clone()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!("challenge_unavailable")
        ),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(d.messages().len(), 1);
    d.stop().await;

    // A wrong secret is the operator's problem: 502, and no token passes.
    fake.set_mode(Mode::Normal);
    let d = captcha_daemon(kind, &fake, "not-the-secret", |_| {}).await;
    let (status, body) = send(&d, CN, json!({ field: fake.solve("shop.example") })).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_GATEWAY, json!("challenge_unavailable")),
        "{body}"
    );
    assert!(d.messages().is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turnstile_tokens_are_judged_by_siteverify() {
    captcha_tokens_are_judged_by_siteverify(Provider::Turnstile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hcaptcha_tokens_are_judged_by_siteverify() {
    captcha_tokens_are_judged_by_siteverify(Provider::Hcaptcha).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_captcha_secret_can_come_from_a_file() {
    let fake = FakeSiteverify::start(Provider::Turnstile, "secret-in-a-file", "site-key-1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("turnstile.secret");
    std::fs::write(&path, "secret-in-a-file\n").unwrap();
    let d = captcha_daemon(ChallengeKind::Turnstile, &fake, "", |c| {
        c.challenge.secret_file = Some(path);
    })
    .await;
    let token = fake.solve("shop.example");
    let (status, body) = send(&d, CN, json!({ "cf-turnstile-response": token })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(fake.seen()[0].params["secret"], "secret-in-a-file");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_on_allowed_origins_may_fetch_challenges() {
    let d = TestDaemon::start(Backend::Sqlite, |c| {
        altcha(c);
        c.http.cors.allowed_origins = vec!["https://shop.example".parse().unwrap()];
    })
    .await
    .unwrap();
    let get = |origin: &'static str| {
        d.http
            .get(d.url("/v1/challenge"))
            .header("origin", origin)
            .send()
    };
    let resp = get("https://shop.example").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
    let resp = get("https://evil.example").await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    // Challenges are only handed out: any other method is refused.
    let resp = d.http.post(d.url("/v1/challenge")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    d.stop().await;
}
