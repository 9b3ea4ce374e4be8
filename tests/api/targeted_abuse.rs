//! Attacks aimed at other people or at the store, end to end on both stores: cookieless sends
//! that would mint sessions, one network posing as many addresses, strangers spending a
//! number's sends or locking it with wrong codes, a pumping breaker flipped on purpose, and the
//! challenge that asks suspicious browsers to prove they are one.

use crate::common;

use common::daemon::TestDaemon;
use common::reply::Reply;
use reqwest::StatusCode;
use serde_json::{Value, json};
use verifyd::config::{ChallengeMode, Config};

const VICTIM: &str = "+8613800138000";

/// Every limit off, client addresses from `X-Forwarded-For` (the test is the proxy): a test
/// turns on what it is about.
fn open_door(c: &mut Config) {
    let (pp, ip) = (&mut c.per_phone, &mut c.per_ip);
    (
        pp.max_sends,
        pp.daily_max,
        pp.hard_max_sends,
        pp.hard_daily_max,
    ) = (0, 0, 0, 0);
    (pp.network_max_sends, pp.network_daily_max) = (0, 0);
    (pp.max_failed_checks, pp.network_max_failed_checks) = (0, 0);
    (ip.max_sends, ip.max_checks, ip.prefix_max_sends) = (0, 0, 0);
    c.global.max_sends_per_hour = 0;
    c.pumping.enabled = false;
    c.challenge.mode = ChallengeMode::Off;
    c.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
}

/// A browser request from `ip` (via the trusted proxy), with the session cookie when given.
async fn browser(d: &TestDaemon, ip: &str, cookie: Option<&str>, path: &str, body: Value) -> Reply {
    let mut req = d
        .http
        .post(d.url(path))
        .header("x-forwarded-for", ip)
        .json(&body);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("sessionid={c}"));
    }
    Reply::from(req.send().await.unwrap()).await
}

/// A fresh browser from `ip` asks for a code; returns the reply and its new session cookie.
async fn send_from(d: &TestDaemon, ip: &str, phone: &str) -> Reply {
    browser(d, ip, None, "/v1/verifications", json!({ "phone": phone })).await
}

async fn check_from(d: &TestDaemon, ip: &str, cookie: &str, phone: &str, code: &str) -> Reply {
    let body = json!({ "phone": phone, "code": code });
    browser(d, ip, Some(cookie), "/v1/verifications/check", body).await
}

/// A backend (API key) asks for a code for a new session of its own.
async fn backend_send(d: &TestDaemon, phone: &str) -> (StatusCode, Value) {
    let (s, v) = d.api(reqwest::Method::POST, "/v1/sessions", None).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let body = json!({ "phone": phone, "session": v["key"] });
    d.api(reqwest::Method::POST, "/v1/verifications", Some(body))
        .await
}

/// Session rows in the daemon's store, counted directly.
async fn session_rows(d: &TestDaemon) -> i64 {
    const SQL: &str = "SELECT count(*) FROM sessions";
    match &d.db {
        None => {
            let c = rusqlite::Connection::open(&d.config.store.sqlite.path).unwrap();
            c.query_row(SQL, [], |r| r.get(0)).unwrap()
        }
        Some(db) => {
            let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            c.query_one(SQL, &[]).await.unwrap().get(0)
        }
    }
}

fn is_challenge(r: &Reply) -> bool {
    r.status == StatusCode::PRECONDITION_REQUIRED
        && r.error() == "challenge_required"
        && r.body["challenge"] == "/v1/challenge"
        && r.headers.get("retry-after").is_none()
}

on_both_stores! {
    async fn refused_cookieless_sends_write_no_session_and_set_no_cookie(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            open_door(c);
            c.per_ip.max_sends = 1;
        })
        .await
        else {
            return;
        };
        let first = send_from(&d, "203.0.113.9", "+447400900123").await;
        assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
        first.session_cookie().filter(|c| !c.is_empty()).expect("an accepted send brings its session");
        let rows = session_rows(&d).await;
        assert_eq!(rows, 1);
        // The flood: cookieless sends from the refused address, on both routes, in parallel.
        let tasks: Vec<_> = (0..120)
            .map(|n| {
                let (http, base) = (d.http.clone(), d.base.clone());
                tokio::spawn(async move {
                    let req = if n % 3 == 0 {
                        http.get(format!("{base}/sms_send/?phone=%2B44740090{n:04}"))
                    } else {
                        http.post(format!("{base}/v1/verifications"))
                            .json(&json!({ "phone": format!("+44740090{n:04}") }))
                    };
                    let resp = req.header("x-forwarded-for", "203.0.113.9").send().await.unwrap();
                    (resp.status(), resp.headers().get("set-cookie").cloned())
                })
            })
            .collect();
        for t in tasks {
            let (status, set_cookie) = t.await.unwrap();
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(set_cookie, None, "a refused send sets no cookie");
        }
        assert_eq!(session_rows(&d).await, rows, "refused sends wrote sessions");
        // Refused for want of a challenge: no session either.
        d.stop().await;
        let Some(d) = TestDaemon::start(backend, |c| {
            open_door(c);
            c.challenge.mode = ChallengeMode::Always;
        })
        .await
        else {
            return;
        };
        for n in 0..30 {
            let r = send_from(&d, "198.51.100.4", &format!("+44740091{n:04}")).await;
            assert!(is_challenge(&r), "{:?} {}", r.status, r.body);
            assert_eq!(r.session_cookie().filter(|c| !c.is_empty()), None);
        }
        assert_eq!(session_rows(&d).await, 0);
        d.stop().await;
    }

    async fn one_network_cannot_pose_as_many_clients(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            open_door(c);
            c.per_ip.max_sends = 2;
            c.per_ip.prefix_max_sends = 5;
        })
        .await
        else {
            return;
        };
        // Ten /64s of one /48, and ten addresses of one /24, one send each, in parallel.
        let clients: Vec<String> = (0..10)
            .map(|n| format!("2001:db8:7:{n:x}::1"))
            .chain((0..10).map(|n| format!("198.51.100.{}", n + 1)))
            .collect();
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(n, ip)| {
                let (http, url) = (d.http.clone(), d.url("/v1/verifications"));
                tokio::spawn(async move {
                    let resp = http.post(url).header("x-forwarded-for", &ip)
                        .json(&json!({ "phone": format!("+44740092{n:04}") }))
                        .send().await.unwrap();
                    let status = resp.status();
                    let body: Value = resp.json().await.unwrap();
                    (ip.contains(':'), status, body)
                })
            })
            .collect();
        let (mut v6, mut v4) = (0, 0);
        for t in tasks {
            let (is_v6, status, body) = t.await.unwrap();
            match status {
                StatusCode::ACCEPTED if is_v6 => v6 += 1,
                StatusCode::ACCEPTED => v4 += 1,
                StatusCode::TOO_MANY_REQUESTS => assert_eq!(body["error"], "too_many_sends"),
                other => panic!("{other}: {body}"),
            }
        }
        assert_eq!((v6, v4), (5, 5), "the prefix limit holds across addresses");
        // Clients in other networks are not affected.
        for ip in ["2001:db8:8::1", "198.51.101.1"] {
            let r = send_from(&d, ip, "+447400930000").await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{ip}: {}", r.body);
        }
        d.stop().await;
    }

    async fn a_stranger_cannot_spend_a_numbers_codes(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            open_door(c);
            let pp = &mut c.per_phone;
            (pp.max_sends, pp.hard_max_sends, pp.network_max_sends) = (5, 8, 3);
            c.challenge.mode = ChallengeMode::WhenSuspicious;
        })
        .await
        else {
            return;
        };
        // The attacker asks for the victim's codes from fresh sessions and addresses of one
        // network: its network's budget runs out, not the number's.
        let mut accepted = 0;
        for n in 0..10 {
            let r = send_from(&d, &format!("203.0.113.{}", n + 1), VICTIM).await;
            match r.status {
                StatusCode::ACCEPTED => accepted += 1,
                _ => assert_eq!((r.status, r.error()), (StatusCode::TOO_MANY_REQUESTS, "too_many_sends")),
            }
        }
        assert_eq!(accepted, 3);
        // The owner, on their own network, gets a code and uses it, no questions asked.
        let owner = send_from(&d, "2001:db8:9::1", VICTIM).await;
        assert_eq!(owner.status, StatusCode::ACCEPTED, "{}", owner.body);
        let code = d.last_code(VICTIM).unwrap();
        let cookie = owner.session_cookie().filter(|c| !c.is_empty()).unwrap();
        let r = check_from(&d, "2001:db8:9::1", &cookie, VICTIM, &code).await;
        assert_eq!(r.body["status"], "approved");
        // With a second network the attacker spends the number's budget (5): now a browser
        // must solve a challenge; a backend (never challenged) gets through, up to the hard
        // cap (8), which nobody passes.
        assert_eq!(send_from(&d, "198.51.100.1", VICTIM).await.status, StatusCode::ACCEPTED);
        let r = send_from(&d, "2001:db8:9::1", VICTIM).await;
        assert!(is_challenge(&r), "{:?} {}", r.status, r.body);
        assert_eq!(r.session_cookie().filter(|c| !c.is_empty()), None);
        for _ in 0..3 {
            assert_eq!(backend_send(&d, VICTIM).await.0, StatusCode::ACCEPTED);
        }
        let (s, v) = backend_send(&d, VICTIM).await;
        assert_eq!((s, v["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("too_many_sends")));
        assert_eq!(d.messages().iter().filter(|m| m["to"] == VICTIM).count(), 8);
        d.stop().await;
    }

    async fn wrong_codes_from_one_network_do_not_lock_the_owner_out(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            open_door(c);
            let pp = &mut c.per_phone;
            (pp.max_failed_checks, pp.network_max_failed_checks) = (50, 5);
            c.verification.max_attempts = 5;
        })
        .await
        else {
            return;
        };
        // Ten wrong codes from one network, over two sessions: the network is locked after
        // five (before, ten locked the number for everyone).
        let mut judged = 0;
        for s in 0..2 {
            let ip = format!("203.0.113.{}", s + 1);
            let sent = send_from(&d, &ip, VICTIM).await;
            let cookie = sent.session_cookie().filter(|c| !c.is_empty()).unwrap();
            for g in 0..5 {
                let r = check_from(&d, &ip, &cookie, VICTIM, &format!("{:06}", 900_000 + s * 10 + g)).await;
                match r.status {
                    StatusCode::OK => judged += 1,
                    _ => assert_eq!((r.status, r.error()), (StatusCode::TOO_MANY_REQUESTS, "too_many_checks")),
                }
            }
        }
        assert_eq!(judged, 5);
        // The owner checks from another network: the right code approves.
        let owner = send_from(&d, "2001:db8:9::1", VICTIM).await;
        let cookie = owner.session_cookie().filter(|c| !c.is_empty()).unwrap();
        let code = d.last_code(VICTIM).unwrap();
        let r = check_from(&d, "2001:db8:9::1", &cookie, VICTIM, &code).await;
        assert_eq!(r.body["status"], "approved", "{}", r.body);
        d.stop().await;
    }

    async fn guesses_per_number_stay_bounded_across_networks(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            open_door(c);
            let pp = &mut c.per_phone;
            (pp.max_failed_checks, pp.network_max_failed_checks) = (12, 5);
            c.verification.max_attempts = 5;
        })
        .await
        else {
            return;
        };
        // Eight networks, each guessing as much as it may: the number's cap (12) bounds them.
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let d_http = d.http.clone();
                let base = d.base.clone();
                tokio::spawn(async move {
                    let ip = format!("198.51.{n}.7");
                    let mut judged = 0;
                    for s in 0..2 {
                        let resp = d_http.post(format!("{base}/v1/verifications"))
                            .header("x-forwarded-for", &ip)
                            .json(&json!({ "phone": VICTIM })).send().await.unwrap();
                        assert_eq!(resp.status(), StatusCode::ACCEPTED);
                        let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap()
                            .split(';').next().unwrap().to_owned();
                        for g in 0..5 {
                            let resp = d_http.post(format!("{base}/v1/verifications/check"))
                                .header("x-forwarded-for", &ip).header("cookie", &cookie)
                                .json(&json!({ "phone": VICTIM, "code": format!("{:06}", 800_000 + n * 100 + s * 10 + g) }))
                                .send().await.unwrap();
                            match resp.status() {
                                StatusCode::OK => judged += 1,
                                StatusCode::TOO_MANY_REQUESTS => {}
                                other => panic!("{other}"),
                            }
                        }
                    }
                    judged
                })
            })
            .collect();
        let mut judged = 0;
        for t in tasks {
            judged += t.await.unwrap();
        }
        assert_eq!(judged, 12, "wrong codes judged for the number, all networks together");
        d.stop().await;
    }

    async fn a_tripped_breaker_asks_browsers_for_a_challenge(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            open_door(c);
            c.pumping.enabled = true;
            c.pumping.min_sample = 4;
            c.pumping.min_conversion = 0.5;
            c.verification.test_numbers.insert("+8613800138999".into(), "123456".into());
        })
        .await
        else {
            return;
        };
        // The attacker interleaves approvals of a public test number with sends it never
        // completes: test numbers do not count, so the breaker still trips.
        for n in 0..4 {
            let t = send_from(&d, &format!("203.0.113.{}", 100 + n), "+8613800138999").await;
            assert_eq!(t.status, StatusCode::ACCEPTED);
            let r = check_from(&d, "203.0.113.100", &t.session_cookie().filter(|c| !c.is_empty()).unwrap(), "+8613800138999", "123456").await;
            assert_eq!(r.body["status"], "approved");
            let r = send_from(&d, &format!("203.0.113.{}", n + 1), &format!("+86138001381{n:02}")).await;
            assert_eq!(r.status, StatusCode::ACCEPTED);
        }
        let states = d.daemon.as_ref().unwrap().app.store.pumping_states().await.unwrap();
        assert!(states[0].tripped && states[0].approvals == 0, "{states:?}");
        // Tripped: people's browsers are asked for a challenge rather than shut out; the
        // seed's route says the same in its own format; backends are not challenged.
        let r = send_from(&d, "2001:db8:9::1", "+8613800138500").await;
        assert!(is_challenge(&r), "{:?} {}", r.status, r.body);
        let resp = d.http.get(d.url("/sms_send/?phone=%2B8613800138501"))
            .header("x-forwarded-for", "2001:db8:9::2").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::PRECONDITION_REQUIRED);
        assert_eq!(resp.json::<Value>().await.unwrap()["Code"], "challenge_required");
        assert_eq!(backend_send(&d, "+8613800138502").await.0, StatusCode::ACCEPTED);
        assert_eq!(send_from(&d, "2001:db8:9::3", "+447400900123").await.status, StatusCode::ACCEPTED);
        d.stop().await;
    }

    async fn suspicious_browsers_are_challenged_before_their_limits(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            open_door(c);
            c.per_ip.max_sends = 4;
            c.global.max_sends_per_hour = 100;
            c.challenge.mode = ChallengeMode::WhenSuspicious;
        })
        .await
        else {
            return;
        };
        // Three sends of four from one address: the fourth asks for a challenge.
        for n in 0..3 {
            let r = send_from(&d, "203.0.113.5", &format!("+44740094{n:04}")).await;
            assert_eq!(r.status, StatusCode::ACCEPTED);
        }
        let r = send_from(&d, "203.0.113.5", "+447400949999").await;
        assert!(is_challenge(&r), "{:?} {}", r.status, r.body);
        assert_eq!(send_from(&d, "203.0.113.6", "+447400949999").await.status, StatusCode::ACCEPTED);
        d.stop().await;
        // Over half the global hourly budget: every browser is asked, backends are not.
        let Some(d) = TestDaemon::start(backend, |c| {
            open_door(c);
            c.global.max_sends_per_hour = 4;
            c.challenge.mode = ChallengeMode::WhenSuspicious;
        })
        .await
        else {
            return;
        };
        for n in 0..2 {
            let r = send_from(&d, &format!("198.51.{n}.1"), &format!("+44740095{n:04}")).await;
            assert_eq!(r.status, StatusCode::ACCEPTED);
        }
        assert_eq!(backend_send(&d, "+447400959998").await.0, StatusCode::ACCEPTED);
        let r = send_from(&d, "198.51.9.1", "+447400959999").await;
        assert!(is_challenge(&r), "{:?} {}", r.status, r.body);
        d.stop().await;
        // `always`: browsers every time, backends never.
        let Some(d) = TestDaemon::start(backend, |c| {
            open_door(c);
            c.challenge.mode = ChallengeMode::Always;
        })
        .await
        else {
            return;
        };
        assert!(is_challenge(&send_from(&d, "192.0.2.1", "+447400960000").await));
        assert_eq!(backend_send(&d, "+447400960000").await.0, StatusCode::ACCEPTED);
        d.stop().await;
    }
}
