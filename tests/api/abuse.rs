//! Abuse protection end to end, over real HTTP, on both stores: quotas under parallel requests
//! (also split across two daemons on one database), the failed-check lock-out, the pumping
//! breaker, budgets and destination lists, `Idempotency-Key`, CORS and the CSRF origin rule,
//! and client addresses behind trusted proxies.

use crate::common;
use verifyd::seconds::Seconds;

use common::no_limits;

use common::daemon::{Browser, TestDaemon};
use common::fake_aliyun::{FakeAliyun, Mode};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::{Value, json};
use verifyd::config::{Config, OnTrip, ProviderKind};
use verifyd::secret::Secret;

const CN: &str = "+8613800138000";
const UK: &str = "+447400123456";

async fn post(
    d: &TestDaemon,
    b: &Browser,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut req = d.http.post(d.url(path)).json(&body);
    if let Some(c) = &b.cookie {
        req = req.header("cookie", format!("sessionid={c}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn sent_to(d: &TestDaemon, phone: &str) -> usize {
    d.messages().iter().filter(|m| m["to"] == phone).count()
}

fn retry_after(h: &HeaderMap) -> u64 {
    h.get(RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The session key a response sets, if it sets one.
fn session_cookie(h: &HeaderMap) -> Option<String> {
    h.get_all("set-cookie").iter().find_map(|v| {
        let (name, value) = v.to_str().ok()?.split(';').next()?.split_once('=')?;
        (name == "sessionid" && !value.is_empty()).then(|| value.to_owned())
    })
}

on_both_stores! {
    async fn per_number_cap_holds_across_two_daemons(backend: Backend) {
        let Some(d1) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.per_phone.max_sends = 5;
        })
        .await
        else {
            return;
        };
        let d2 = d1.sibling().await;
        // 40 fresh browsers, half on each daemon, all asking for a code for one number.
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let mut b = if i % 2 == 0 { d1.browser() } else { d2.browser() };
                tokio::spawn(async move { b.send_code(CN).await })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match status {
                StatusCode::ACCEPTED => accepted += 1,
                StatusCode::TOO_MANY_REQUESTS => assert_eq!(body["error"], "too_many_sends"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(accepted, 5);
        assert_eq!(sent_to(&d1, CN), 5, "the outbox is shared by both daemons");
        // Another number is not affected.
        assert_eq!(d2.browser().send_code(UK).await.0, StatusCode::ACCEPTED);
        d2.stop().await;
        d1.stop().await;
    }

    async fn shared_budgets_are_exact_across_two_daemons(backend: Backend) {
        // PostgreSQL counts the deployment-wide budgets in shards (migration 0008) and waits for
        // the sends in flight only near a limit: the budgets stay exact however sends race.
        let Some(d1) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.global.max_sends_per_hour = 40;
            c.countries.limits.insert("+44".parse().unwrap(), 10);
        })
        .await
        else {
            return;
        };
        let d2 = d1.sibling().await;
        // Fresh browsers and numbers, half on each daemon, all at once: only the budgets bind.
        let race = |prefix: &'static str| {
            let tasks: Vec<_> = (0..60)
                .map(|i| {
                    let mut b = if i % 2 == 0 { d1.browser() } else { d2.browser() };
                    tokio::spawn(async move { b.send_code(&format!("{prefix}{i:03}")).await })
                })
                .collect();
            async move {
                let mut accepted = 0;
                for t in tasks {
                    let (status, body) = t.await.unwrap();
                    match status {
                        StatusCode::ACCEPTED => accepted += 1,
                        StatusCode::TOO_MANY_REQUESTS => {
                            assert_eq!(body["error"], "budget_exhausted")
                        }
                        other => panic!("unexpected {other}: {body}"),
                    }
                }
                accepted
            }
        };
        assert_eq!(race("+447400123").await, 10, "the +44 budget");
        assert_eq!(race("+12015550").await, 30, "what the global budget of 40 had left");
        assert_eq!(d1.messages().len(), 40, "every accepted send went out, no other");
        d2.stop().await;
        d1.stop().await;
    }

    async fn daily_global_and_country_budgets(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.per_phone.daily_max = 2;
            c.global.max_sends_per_hour = 6;
            c.countries.limits.insert("+44".parse().unwrap(), 3);
            c.countries.deny.push("+7".parse().unwrap());
        })
        .await
        else {
            return;
        };
        let b = d.browser();
        let mut statuses = vec![];
        for _ in 0..3 {
            let (s, h, v) = post(&d, &d.browser(), "/v1/verifications", json!({"phone": CN}), &[]).await;
            statuses.push((s, v["error"].clone()));
            if s == StatusCode::TOO_MANY_REQUESTS {
                assert!(retry_after(&h) > 3600, "the daily window: {h:?}");
            }
        }
        assert_eq!(statuses[2], (StatusCode::TOO_MANY_REQUESTS, json!("too_many_sends")));
        // +44 has 3 per hour; the fourth is over the country budget.
        for n in 0..4 {
            let phone = format!("+44740012350{n}");
            let (s, _, v) = post(&d, &d.browser(), "/v1/verifications", json!({"phone": phone}), &[]).await;
            if n < 3 {
                assert_eq!(s, StatusCode::ACCEPTED, "{v}");
            } else {
                assert_eq!((s, v["error"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("budget_exhausted")));
            }
        }
        // 2 + 3 sent; one more fits the global budget of 6, then it is used up.
        let (s, _, _) = post(&d, &b, "/v1/verifications", json!({"phone": "+12015550123"}), &[]).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let (s, h, v) = post(&d, &b, "/v1/verifications", json!({"phone": "+12015550124"}), &[]).await;
        assert_eq!((s, v["error"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("budget_exhausted")));
        assert!(retry_after(&h) <= 3600);
        let (s, _, v) = post(&d, &b, "/v1/verifications", json!({"phone": "+79123456789"}), &[]).await;
        assert_eq!((s, v["error"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("destination_blocked")));
        assert_eq!(d.messages().len(), 6);
        d.stop().await;
    }

    async fn failed_checks_lock_the_number_across_sessions_and_resends(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.per_phone.max_failed_checks = 6;
            c.verification.max_attempts = 3;
        })
        .await
        else {
            return;
        };
        // An attacker guesses in parallel from many sessions, resending when a code dies.
        let mut guesses_judged = 0;
        let mut refused = 0;
        for round in 0..4 {
            let tasks: Vec<_> = (0..3)
                .map(|i| {
                    let mut b = d.browser();
                    tokio::spawn(async move {
                        assert_eq!(b.send_code(CN).await.0, StatusCode::ACCEPTED);
                        let mut out = vec![];
                        for g in 0..3 {
                            let guess = format!("{:06}", round * 100 + i * 10 + g);
                            out.push(b.check_code(CN, &guess).await);
                        }
                        out
                    })
                })
                .collect();
            for t in tasks {
                for (status, body) in t.await.unwrap() {
                    match status {
                        StatusCode::OK => guesses_judged += 1,
                        StatusCode::TOO_MANY_REQUESTS => {
                            assert_eq!(body["error"], "too_many_checks");
                            refused += 1;
                        }
                        other => panic!("unexpected {other}: {body}"),
                    }
                }
            }
        }
        assert_eq!(guesses_judged, 6, "exactly max_failed_checks guesses were judged");
        assert_eq!(refused, 36 - 6);
        // The owner's fresh session with a fresh code is locked out too, whatever the code.
        let mut owner = d.browser();
        assert_eq!(owner.send_code(CN).await.0, StatusCode::ACCEPTED);
        let code = d.last_code(CN).unwrap();
        let (s, h, v) = post(&d, &owner, "/v1/verifications/check", json!({"phone": CN, "code": code}), &[]).await;
        assert_eq!((s, v["error"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("too_many_checks")));
        assert!(retry_after(&h) > 3000);
        // A session without a code for the number learns nothing about the lock.
        let mut stranger = d.browser();
        assert_eq!(stranger.send_code(UK).await.0, StatusCode::ACCEPTED);
        let locked = stranger.check_code(CN, "123456").await;
        let unlocked = stranger.check_code("+12015550123", "123456").await;
        assert_eq!(locked, unlocked);
        assert_eq!(locked.0, StatusCode::NOT_FOUND);
        d.stop().await;
    }

    async fn pumping_breaker_trips_on_one_country_only(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.pumping.enabled = true;
            c.pumping.min_sample = 8;
            c.pumping.min_conversion = 0.25;
            c.pumping.on_trip = OnTrip::Block;
        })
        .await
        else {
            return;
        };
        // Legitimate traffic to +44: every code is typed in.
        for n in 0..4 {
            let phone = format!("+44740012360{n}");
            let mut b = d.browser();
            assert_eq!(b.send_code(&phone).await.0, StatusCode::ACCEPTED);
            let code = d.last_code(&phone).unwrap();
            assert_eq!(b.check_code(&phone, &code).await.1["status"], "approved");
        }
        // The attack: bots request codes for many +86 numbers, in parallel, and never type them.
        let tasks: Vec<_> = (0..30)
            .map(|n| {
                let mut b = d.browser();
                tokio::spawn(async move { b.send_code(&format!("+86138001381{n:02}")).await })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match status {
                StatusCode::ACCEPTED => accepted += 1,
                StatusCode::TOO_MANY_REQUESTS => assert_eq!(body["error"], "destination_blocked"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        // The breaker is decided under its row's lock (PostgreSQL) or the write lock (SQLite):
        // the send that trips it is the last one, however many race it.
        assert_eq!(accepted, 8, "the breaker opened right after the sample");
        // +44 keeps flowing, +86 stays blocked.
        assert_eq!(d.browser().send_code("+447400123700").await.0, StatusCode::ACCEPTED);
        let (s, h, _) = post(&d, &d.browser(), "/v1/verifications", json!({"phone": "+8613800138999"}), &[]).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        assert!(retry_after(&h) <= 3600);
        let states = d.daemon.as_ref().unwrap().app.store.pumping_states().await.unwrap();
        let cn = states.iter().find(|p| p.country == "+86").unwrap();
        assert!(cn.tripped && cn.approvals == 0);
        assert!(!states.iter().find(|p| p.country == "+44").unwrap().tripped);
        // The operator resets it: sends flow again.
        assert!(d.daemon.as_ref().unwrap().app.store.pumping_reset("+86").await.unwrap());
        assert_eq!(d.browser().send_code("+8613800138999").await.0, StatusCode::ACCEPTED);
        d.stop().await;
    }

    async fn failed_deliveries_do_not_use_up_limits(backend: Backend) {
        const ID: &str = "LTAI5tQuotaAccessKeyId";
        const SECRET: &str = "QuotaAccessKeySecret0123456789";
        let fake = FakeAliyun::start(ID, SECRET).await;
        fake.set_mode(Mode::ServerError);
        let endpoint = fake.url();
        let Some(d) = TestDaemon::start(backend, move |c| {
            no_limits(c);
            // Every limit a send takes, each with room for exactly two.
            c.per_phone.max_sends = 2;
            c.per_phone.daily_max = 2;
            c.per_ip.max_sends = 2;
            c.global.max_sends_per_hour = 2;
            c.countries.limits.insert("+86".parse().unwrap(), 2);
            c.pumping.enabled = true;
            c.pumping.min_sample = 3;
            // The provider's own breaker would stop asking the gateway after a few failures.
            c.provider.breaker.failures = 0;
            c.provider.kind = ProviderKind::Aliyun;
            let a = &mut c.provider.aliyun;
            a.access_key_id = ID.into();
            a.access_key_secret = Secret::new(SECRET);
            a.sign_name = "验证码测试".into();
            a.template_code = "SMS_154950909".into();
            a.endpoint = endpoint;
            a.timeout = Seconds::from_millis(500);
            a.max_total = Seconds::from_millis(1000);
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        for n in 0..5 {
            let (s, v) = b.send_code(CN).await;
            assert_eq!((s, v["error"].clone()), (StatusCode::SERVICE_UNAVAILABLE, json!("provider_unavailable")), "send {n}");
        }
        assert!(fake.requests_seen().len() >= 5, "every send reached the gateway");
        let states = d.daemon.as_ref().unwrap().app.store.pumping_states().await.unwrap();
        assert!(states.iter().all(|p| p.sends == 0 && !p.tripped), "{states:?}");
        // The gateway is back: the two sends every limit allows go out, then the limits refuse.
        fake.set_mode(Mode::Ok);
        assert_eq!(b.send_code(CN).await.0, StatusCode::ACCEPTED);
        let (s, v) = d.browser().send_code(CN).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let (s, v) = d.browser().send_code(CN).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
        assert_eq!(fake.messages().len(), 2);
        d.stop().await;
    }

    async fn idempotent_sends_send_once(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, no_limits).await else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(b.send_code(UK).await.0, StatusCode::ACCEPTED);
        let before = sent_to(&d, CN);
        let key = [("idempotency-key", "order-42")];
        // Concurrent duplicates of one request.
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (http, url, cookie) = (d.http.clone(), d.url("/v1/verifications"), b.cookie.clone().unwrap());
                tokio::spawn(async move {
                    let r = http.post(url).header("cookie", format!("sessionid={cookie}"))
                        .header("idempotency-key", "order-42").json(&json!({"phone": CN}))
                        .send().await.unwrap();
                    (r.status(), r.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut answers = vec![];
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
        assert_eq!(answers[0].0, StatusCode::ACCEPTED);
        assert_eq!(sent_to(&d, CN), before + 1);
        // A later retry gets the same answer, marked as a replay, and sends nothing.
        let (s, h, v) = post(&d, &b, "/v1/verifications", json!({"phone": CN}), &key).await;
        assert_eq!((s, v), answers[0].clone());
        assert_eq!(h.get("idempotent-replayed").unwrap(), "true");
        assert_eq!(sent_to(&d, CN), before + 1);
        // The same key for another request is refused.
        let (s, _, v) = post(&d, &b, "/v1/verifications", json!({"phone": UK}), &key).await;
        assert_eq!((s, v["error"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("idempotency_key_reused")));
        // Keys are per session: another browser's key of the same name is its own.
        let other = {
            let mut o = d.browser();
            o.send_code("+12015550123").await;
            o
        };
        let (s, h, _) = post(&d, &other, "/v1/verifications", json!({"phone": CN}), &key).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        assert!(h.get("idempotent-replayed").is_none());
        d.stop().await;
    }

    async fn idempotent_replays_keep_retry_after_and_the_session_scope(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.per_phone.max_sends = 1;
        })
        .await
        else {
            return;
        };
        // A refused send, replayed: the 429 comes back with its Retry-After.
        assert_eq!(d.browser().send_code(CN).await.0, StatusCode::ACCEPTED);
        let mut b = d.browser();
        assert_eq!(b.send_code(UK).await.0, StatusCode::ACCEPTED);
        let key = [("idempotency-key", "retry-me")];
        let (s, h, v) = post(&d, &b, "/v1/verifications", json!({"phone": CN}), &key).await;
        assert_eq!((s, v["error"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("too_many_sends")));
        let first_wait = retry_after(&h);
        assert!(h.get("idempotent-replayed").is_none());
        let (s, h, v2) = post(&d, &b, "/v1/verifications", json!({"phone": CN}), &key).await;
        assert_eq!((s, &v2), (StatusCode::TOO_MANY_REQUESTS, &v));
        assert_eq!(h.get("idempotent-replayed").unwrap(), "true");
        let replayed_wait = retry_after(&h);
        assert!(replayed_wait <= first_wait && replayed_wait + 5 >= first_wait, "{first_wait} then {replayed_wait}");
        // A browser without a cookie: the first answer creates its session, and the key is
        // scoped to that session.
        let phone = "+12015550123";
        let anonymous = d.browser();
        let key = [("idempotency-key", "first-visit")];
        let (s, h, first) = post(&d, &anonymous, "/v1/verifications", json!({"phone": phone}), &key).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let cookie = session_cookie(&h).expect("a new session's cookie");
        // Retried with that cookie: a replay, nothing sent, and no other session's cookie.
        let with_cookie = Browser { cookie: Some(cookie.clone()), ..d.browser() };
        let (s, h, again) = post(&d, &with_cookie, "/v1/verifications", json!({"phone": phone}), &key).await;
        assert_eq!((s, &again), (StatusCode::ACCEPTED, &first));
        assert_eq!(h.get("idempotent-replayed").unwrap(), "true");
        assert!(session_cookie(&h).is_none_or(|c| c == cookie), "{h:?}");
        assert_eq!(sent_to(&d, phone), 1);
        // Retried without the cookie: a new request (here refused by the per-number cap),
        // never a replay of the first session's answer; refused, it gets no session at all.
        let (s, h, v) = post(&d, &anonymous, "/v1/verifications", json!({"phone": phone}), &key).await;
        assert_eq!((s, v["error"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("too_many_sends")));
        assert!(h.get("idempotent-replayed").is_none());
        assert!(session_cookie(&h).is_none(), "{h:?}");
        assert_eq!(sent_to(&d, phone), 1);
        d.stop().await;
    }

    async fn cors_for_browser_routes_only(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.http.cors.allowed_origins = vec!["https://shop.example".parse().unwrap()];
        })
        .await
        else {
            return;
        };
        let preflight = |path: &str, origin: &str| {
            d.http
                .request(reqwest::Method::OPTIONS, d.url(path))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .send()
        };
        let r = preflight("/v1/verifications", "https://shop.example").await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://shop.example");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert!(h["access-control-allow-headers"].to_str().unwrap().contains("idempotency-key"));
        assert_eq!(h["vary"], "Origin");
        assert_eq!(h["cache-control"], "no-store");
        let r = preflight("/v1/verifications/check", "https://evil.example").await.unwrap();
        assert!(r.headers().get("access-control-allow-origin").is_none());
        // The backend API never answers CORS.
        let r = preflight("/v1/sessions", "https://shop.example").await.unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(r.headers().get("access-control-allow-origin").is_none());
        let (s, h, _) = post(&d, &d.browser(), "/v1/sessions", json!({}), &[("origin", "https://shop.example"), ("authorization", &format!("Bearer {}", common::daemon::API_KEY))]).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(h.get("access-control-allow-origin").is_none());
        // Actual requests: allowed origin gets the headers; a foreign origin is refused.
        let (s, h, _) = post(&d, &d.browser(), "/v1/verifications", json!({"phone": CN}), &[("origin", "https://shop.example")]).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        assert_eq!(h["access-control-allow-origin"], "https://shop.example");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let (s, h, v) = post(&d, &d.browser(), "/v1/verifications", json!({"phone": UK}), &[("origin", "https://evil.example")]).await;
        assert_eq!((s, v["error"].clone()), (StatusCode::FORBIDDEN, json!("origin_not_allowed")));
        assert!(h.get("access-control-allow-origin").is_none());
        assert_eq!(sent_to(&d, UK), 0);
        // Same origin as the daemon itself is fine.
        let own = d.base.clone();
        let (s, _, _) = post(&d, &d.browser(), "/v1/verifications", json!({"phone": UK}), &[("origin", &own)]).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        d.stop().await;
    }

    async fn per_client_limits_and_forwarded_addresses(backend: Backend) {
        let limited = |trust: bool| {
            move |c: &mut Config| {
                no_limits(c);
                c.per_ip.max_sends = 2;
                c.per_ip.max_checks = 3;
                if trust {
                    c.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
                }
            }
        };
        let Some(d) = TestDaemon::start(backend, limited(true)).await else {
            return;
        };
        let xff = |ip: &'static str| [("x-forwarded-for", ip)];
        // Behind a trusted proxy every forwarded client has its own allowance ...
        let tasks: Vec<_> = (0..6)
            .map(|n| {
                let http = d.http.clone();
                let url = d.url("/v1/verifications");
                let ip = if n % 2 == 0 { "203.0.113.1" } else { "2001:db8:1:2::5" };
                tokio::spawn(async move {
                    http.post(url).header("x-forwarded-for", ip)
                        .json(&json!({"phone": format!("+4474001232{n:02}")}))
                        .send().await.unwrap().status()
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap() == StatusCode::ACCEPTED {
                ok += 1;
            }
        }
        assert_eq!(ok, 4, "two per client address");
        // ... and IPv6 clients share one allowance per /64.
        let (s, _, v) = post(&d, &d.browser(), "/v1/verifications", json!({"phone": UK}), &xff("2001:db8:1:2:ffff::9")).await;
        assert_eq!((s, v["error"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("too_many_sends")));
        let (s, _, _) = post(&d, &d.browser(), "/v1/verifications", json!({"phone": UK}), &xff("2001:db8:1:3::9")).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        // Checks per client: the fourth is refused.
        let mut b = d.browser();
        assert_eq!(b.send_code("+12015550123").await.0, StatusCode::ACCEPTED);
        for n in 0..4 {
            let (s, _, v) = post(&d, &b, "/v1/verifications/check", json!({"phone": CN, "code": "123456"}), &xff("198.51.100.7")).await;
            let want = if n < 3 { StatusCode::NOT_FOUND } else { StatusCode::TOO_MANY_REQUESTS };
            assert_eq!(s, want, "{v}");
        }
        // Backends are not limited by their own address.
        for n in 0..3 {
            let (s, v) = d.api(reqwest::Method::POST, "/v1/sessions", None).await;
            assert_eq!(s, StatusCode::CREATED);
            let key = v["key"].as_str().unwrap().to_owned();
            let (s, v) = d.api(reqwest::Method::POST, "/v1/verifications", Some(json!({"phone": format!("+1201555030{n}"), "session": key}))).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        }
        d.stop().await;
        // Without trust, X-Forwarded-For is ignored: all requests come from 127.0.0.1.
        let Some(d) = TestDaemon::start(backend, limited(false)).await else {
            return;
        };
        let mut statuses = vec![];
        for (n, ip) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"].into_iter().enumerate() {
            let (s, _, _) = post(&d, &d.browser(), "/v1/verifications", json!({"phone": format!("+4474001233{n:02}")}), &xff(ip)).await;
            statuses.push(s);
        }
        assert_eq!(statuses, [StatusCode::ACCEPTED, StatusCode::ACCEPTED, StatusCode::TOO_MANY_REQUESTS]);
        d.stop().await;
    }
}
