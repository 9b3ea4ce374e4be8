//! Attacks at the HTTP edge, over real HTTP: another site's links and images aimed at the
//! state-changing routes (CSRF, every header combination a browser or a forger sends), the
//! `__Host-` cookie, clients behind a reverse proxy writing `ip:port` forwarding entries, the
//! warning for forwarding headers nobody trusts, and an `Idempotency-Key` request whose client
//! hangs up mid-flight.

use crate::common;
use verifyd::seconds::Seconds;

use common::no_limits;

use common::daemon::{API_KEY, Browser, TestDaemon};
use common::fake_aliyun::{FakeAliyun, Mode};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::time::Duration;
use verifyd::config::ProviderKind;
use verifyd::secret::Secret;

const VICTIM: &str = "+8613800138000";
const ATTACKER: &str = "+447400900123";
const SHOP: &str = "https://shop.example";

/// A request carrying `b`'s cookie and `headers`; follows `Set-Cookie` like a browser.
async fn call(
    b: &mut Browser,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, String)],
) -> (StatusCode, HeaderMap, Value) {
    let mut req = b.http.request(method, format!("{}{}", b.base, path));
    if let Some(c) = &b.cookie {
        req = req.header("cookie", format!("{}={c}", b.cookie_name));
    }
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let (status, h) = (resp.status(), resp.headers().clone());
    for v in h.get_all("set-cookie") {
        let first = v.to_str().unwrap().split(';').next().unwrap();
        if let Some((name, value)) = first.split_once('=') {
            if name == b.cookie_name && !value.is_empty() {
                b.cookie = Some(value.to_owned());
            }
        }
    }
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        h,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn sent_to(d: &TestDaemon, phone: &str) -> usize {
    d.messages().iter().filter(|m| m["to"] == phone).count()
}

async fn verified_phone(b: &mut Browser) -> Value {
    let (s, _, v) = call(b, reqwest::Method::GET, "/v1/session", None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["verified_phone"].clone()
}

fn enc(phone: &str) -> String {
    phone.replace('+', "%2B")
}

/// The header sets another site's page makes a browser send (or a forger sends), each of which
/// must be refused on a state-changing route.
fn cross_site() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    vec![
        (
            "img or link from another site",
            vec![("sec-fetch-site", "cross-site".into())],
        ),
        (
            "another site, even an allowed origin",
            vec![
                ("sec-fetch-site", "cross-site".into()),
                ("origin", SHOP.into()),
            ],
        ),
        (
            "img from a sibling subdomain",
            vec![("sec-fetch-site", "same-site".into())],
        ),
        (
            "script on a sibling subdomain that is not allowed",
            vec![
                ("sec-fetch-site", "same-site".into()),
                ("origin", "https://evil.shop.example".into()),
            ],
        ),
        (
            "older browser: foreign Origin",
            vec![("origin", "https://evil.example".into())],
        ),
        (
            "older browser: opaque Origin",
            vec![("origin", "null".into())],
        ),
        (
            "older browser: foreign Referer",
            vec![("referer", "https://evil.example/win?x=1".into())],
        ),
        (
            "older browser: unreadable Referer",
            vec![("referer", "about:blank".into())],
        ),
    ]
}

/// The header sets of requests that are not another site's: they pass.
fn not_cross_site(d: &TestDaemon) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    vec![
        ("curl: no browser headers", vec![]),
        (
            "our own page",
            vec![
                ("sec-fetch-site", "same-origin".into()),
                ("origin", d.base.clone()),
            ],
        ),
        (
            "typed into the address bar",
            vec![("sec-fetch-site", "none".into())],
        ),
        (
            "allowed origin on the same site",
            vec![
                ("sec-fetch-site", "same-site".into()),
                ("origin", SHOP.into()),
            ],
        ),
        (
            "older browser: own Origin",
            vec![("origin", d.base.clone())],
        ),
        (
            "older browser: allowed Origin",
            vec![("origin", SHOP.into())],
        ),
        (
            "older browser: own Referer",
            vec![("referer", format!("{}/", d.base))],
        ),
    ]
}

on_both_stores! {
    async fn other_sites_cannot_send_or_bind_a_number_through_the_victims_session(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.http.cors.allowed_origins = vec![SHOP.parse().unwrap()];
        })
        .await
        else {
            return;
        };
        // The victim verifies their own number on the site.
        let mut victim = d.browser();
        assert_eq!(victim.send_code(VICTIM).await.0, StatusCode::ACCEPTED);
        let code = d.last_code(VICTIM).unwrap();
        victim.wrong_then_right(VICTIM, &code).await;
        assert_eq!(verified_phone(&mut victim).await, VICTIM);

        // Another site's image or link asks for a code to the attacker's phone in the
        // victim's session, on every route and method that sends.
        let send_routes = [
            (reqwest::Method::GET, format!("/sms_send/?phone={}", enc(ATTACKER)), None),
            (reqwest::Method::GET, format!("/sms_send?phone={}", enc(ATTACKER)), None),
            (reqwest::Method::POST, format!("/sms_send/?phone={}", enc(ATTACKER)), None),
            (reqwest::Method::POST, "/v1/verifications".to_owned(), Some(json!({"phone": ATTACKER}))),
        ];
        for (what, headers) in cross_site() {
            for (method, path, body) in &send_routes {
                let (s, _, v) = call(&mut victim, method.clone(), path, body.clone(), &headers).await;
                assert_eq!(s, StatusCode::FORBIDDEN, "{what}: {method} {path}: {v}");
                assert_eq!(v["error"], "origin_not_allowed", "{what}: {v}");
            }
            // A visitor without a session: no code either (an <img> sending SMS from
            // visitors' addresses).
            let mut visitor = d.browser();
            let (s, h, _) = call(&mut visitor, reqwest::Method::GET, &send_routes[0].1, None, &headers).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{what}");
            assert!(h.get("set-cookie").is_none(), "{what}: a refused request sets no cookie");
        }
        assert_eq!(sent_to(&d, ATTACKER), 0, "nothing was sent to the attacker's phone");

        // Suppose the attacker's number has a live code in the victim's session anyway: a
        // cross-site check of it must not bind it.
        let (s, _, v) = call(&mut victim, reqwest::Method::POST, "/v1/verifications", Some(json!({"phone": ATTACKER})), &[]).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let attacker_code = d.last_code(ATTACKER).unwrap();
        let check_routes = [
            (reqwest::Method::GET, format!("/sms_check/?phone={}&code={attacker_code}", enc(ATTACKER)), None),
            (reqwest::Method::POST, format!("/sms_check?phone={}&code={attacker_code}", enc(ATTACKER)), None),
            (
                reqwest::Method::POST,
                "/v1/verifications/check".to_owned(),
                Some(json!({"phone": ATTACKER, "code": attacker_code})),
            ),
        ];
        for (what, headers) in cross_site() {
            for (method, path, body) in &check_routes {
                let (s, _, v) = call(&mut victim, method.clone(), path, body.clone(), &headers).await;
                assert_eq!(s, StatusCode::FORBIDDEN, "{what}: {method} {path}: {v}");
            }
        }
        assert_eq!(verified_phone(&mut victim).await, VICTIM, "the victim's session is unchanged");

        // The same check from the site itself goes through: the refusals above were the
        // origin rule, not a wrong code.
        let own = [("sec-fetch-site", "same-origin".to_owned())];
        let (s, _, v) = call(&mut victim, reqwest::Method::GET, &check_routes[0].1, None, &own).await;
        assert_eq!((s, v), (StatusCode::OK, json!({"result": "OK"})));
        assert_eq!(verified_phone(&mut victim).await, ATTACKER);
        d.stop().await;
    }

    async fn requests_that_are_not_another_sites_pass(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.http.cors.allowed_origins = vec![SHOP.parse().unwrap()];
        })
        .await
        else {
            return;
        };
        for (n, (what, headers)) in not_cross_site(&d).into_iter().enumerate() {
            let phone = format!("+86138001380{n:02}");
            let mut b = d.browser();
            let (s, _, v) = call(&mut b, reqwest::Method::GET, &format!("/sms_send/?phone={}", enc(&phone)), None, &headers).await;
            assert_eq!((s, &v["Code"]), (StatusCode::OK, &json!("OK")), "{what}: {v}");
            let code = d.last_code(&phone).unwrap();
            let (s, _, v) = call(&mut b, reqwest::Method::GET, &format!("/sms_check/?phone={}&code={code}", enc(&phone)), None, &headers).await;
            assert_eq!((s, v), (StatusCode::OK, json!({"result": "OK"})), "{what}");
            let (s, _, v) = call(&mut b, reqwest::Method::POST, "/v1/verifications", Some(json!({"phone": VICTIM})), &headers).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{what}: {v}");
        }
        // A backend with its API key is not a browser, whatever Origin it forwards.
        let (s, v) = d.api(reqwest::Method::POST, "/v1/sessions", None).await;
        assert_eq!(s, StatusCode::CREATED);
        let key = v["key"].as_str().unwrap().to_owned();
        let resp = d.http.post(d.url("/v1/verifications")).bearer_auth(API_KEY)
            .header("origin", "https://evil.example").header("sec-fetch-site", "cross-site")
            .json(&json!({"phone": ATTACKER, "session": key})).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        // Reading routes stay readable from anywhere (CORS decides who sees the answer).
        let resp = d.http.get(d.url("/healthz")).header("sec-fetch-site", "cross-site").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        d.stop().await;
    }

    async fn the_host_prefixed_cookie_carries_the_session(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.session.cookie_secure = true;
            c.session.cookie_host_prefix = true;
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(b.cookie_name, "__Host-sessionid");
        let resp = b.request(reqwest::Method::POST, "/v1/verifications", Some(json!({"phone": VICTIM}))).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(set.starts_with("__Host-sessionid="), "{set}");
        assert!(set.contains("; Path=/;") && set.contains("; Secure") && !set.contains("Domain="), "{set}");
        let code = d.last_code(VICTIM).unwrap();
        b.wrong_then_right(VICTIM, &code).await;
        // A cookie without the prefix (a sibling subdomain could have set one) is not read.
        let resp = d.http.get(d.url("/v1/session"))
            .header("cookie", format!("sessionid={}", b.cookie.clone().unwrap())).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(verified_phone(&mut b).await, VICTIM);
        d.stop().await;
    }

    async fn clients_behind_a_proxy_with_ports_keep_their_own_counters(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.per_ip.max_sends = 2;
            c.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        })
        .await
        else {
            return;
        };
        // The proxy writes each client with its source port, as some load balancers do.
        let send = |xff: &'static str, n: u32| {
            let (http, url) = (d.http.clone(), d.url("/v1/verifications"));
            async move {
                let r = http.post(url).header("x-forwarded-for", xff)
                    .json(&json!({"phone": format!("+4474009003{n:02}")})).send().await.unwrap();
                let s = r.status();
                (s, r.json::<Value>().await.unwrap())
            }
        };
        assert_eq!(send("203.0.113.1:50001", 1).await.0, StatusCode::ACCEPTED);
        assert_eq!(send("203.0.113.1:50002", 2).await.0, StatusCode::ACCEPTED);
        assert_eq!(send("[2001:db8:1:2::5]:443", 3).await.0, StatusCode::ACCEPTED);
        assert_eq!(send("198.51.100.9, [2001:db8:1:2::6]:8443", 4).await.0, StatusCode::ACCEPTED);
        // Each client's third send is its own refusal; the other client is untouched.
        let (s, v) = send("203.0.113.1:50003", 5).await;
        assert_eq!((s, v["error"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("too_many_sends")));
        let (s, v) = send("[2001:db8:1:2::7]:1", 6).await;
        assert_eq!((s, v["error"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("too_many_sends")));
        // A third client behind the same proxy still has its whole allowance.
        assert_eq!(send("192.0.2.44:4444", 7).await.0, StatusCode::ACCEPTED);
        assert_eq!(send("192.0.2.44", 8).await.0, StatusCode::ACCEPTED);
        d.stop().await;
    }

    async fn a_dropped_idempotent_request_releases_its_key(backend: Backend) {
        const ID: &str = "LTAI5tEdgeAccessKeyId";
        const SECRET: &str = "EdgeAccessKeySecret0123456789";
        let fake = FakeAliyun::start(ID, SECRET).await;
        // The gateway records the message at once and answers only after 3 s.
        fake.set_mode(Mode::Stall(Duration::from_secs(3)));
        let endpoint = fake.url();
        let Some(d) = TestDaemon::start(backend, move |c| {
            no_limits(c);
            c.verification.resend_interval = 60;
            c.provider.kind = ProviderKind::Aliyun;
            c.provider.breaker.failures = 0;
            let a = &mut c.provider.aliyun;
            a.access_key_id = ID.into();
            a.access_key_secret = Secret::new(SECRET);
            a.sign_name = "验证码测试".into();
            a.template_code = "SMS_154950909".into();
            a.endpoint = endpoint;
            a.timeout = Seconds::from_millis(10_000);
            a.max_total = Seconds::from_millis(15_000);
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        // A session first, with a number that is not the one retried.
        fake.set_mode(Mode::Ok);
        assert_eq!(b.send_code(VICTIM).await.0, StatusCode::ACCEPTED);
        fake.set_mode(Mode::Stall(Duration::from_secs(3)));
        let key = [("idempotency-key", "pay-7".to_owned())];
        // The client gives up after 0.5 s and closes its connection mid-flight.
        let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
        let cut = impatient.post(d.url("/v1/verifications"))
            .header("cookie", format!("sessionid={}", b.cookie.clone().unwrap()))
            .header("idempotency-key", "pay-7")
            .json(&json!({"phone": ATTACKER})).send().await;
        assert!(cut.is_err(), "the client timed out");
        // The message did reach the gateway before the client left.
        for _ in 0..50 {
            if fake.messages().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fake.messages().len(), 2);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The retry runs (no 409 for a day); since the first code went out, the resend
        // cooldown answers and nothing is sent twice.
        let started = std::time::Instant::now();
        let (s, h, v) = call(&mut b, reqwest::Method::POST, "/v1/verifications", Some(json!({"phone": ATTACKER})), &key).await;
        assert_eq!((s, v["error"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("resend_too_soon")), "{v}");
        assert!(h.get("idempotent-replayed").is_none());
        assert!(started.elapsed() < Duration::from_secs(5), "the retry did not wait for a stale record");
        // That answer is now the key's: the next retry replays it.
        let (s, h, _) = call(&mut b, reqwest::Method::POST, "/v1/verifications", Some(json!({"phone": ATTACKER})), &key).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(h.get("idempotent-replayed").unwrap(), "true");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(fake.messages().len(), 2, "one message per number");
        d.stop().await;
    }
}

/// Forwarding headers while no proxy is trusted: one warning, not one per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_without_trusted_proxies_warn_once() {
    let logs = common::logs::capture("verifyd=info");
    let d = TestDaemon::start(verifyd::config::Backend::Sqlite, no_limits)
        .await
        .unwrap();
    for n in 0..30 {
        let (name, value) = if n % 2 == 0 {
            ("x-forwarded-for", format!("192.0.2.201:{n}"))
        } else {
            ("forwarded", format!("for=\"192.0.2.201:{n}\""))
        };
        let resp = d
            .http
            .get(d.url("/healthz"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let warnings: Vec<String> = logs
        .text()
        .lines()
        .filter(|l| {
            l.contains("WARN")
                && l.contains("192.0.2.201")
                && l.contains("trusted_proxies is empty")
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("192.0.2.201:0"),
        "the first request's header: {}",
        warnings[0]
    );
    d.stop().await;
}
