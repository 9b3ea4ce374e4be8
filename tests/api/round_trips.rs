//! What a send and a check cost the store, counted: one store call each (one statement on
//! PostgreSQL, one transaction on SQLite), for browsers with a cookie, without one and with a
//! stale one, for backends, and on the seed's routes. Counted with
//! `Maintenance::round_trips` on the daemon's own store, around each request.

use reqwest::{Method, StatusCode};
use serde_json::json;
use verifyd::session::SessionKey;

use crate::common::daemon::{Browser, TestDaemon};

/// A number configured with a fixed code: nothing is sent, so no delivery is recorded.
const TEST_NUMBER: &str = "+12015550999";

/// The store calls `req` made. Another task of the daemon (the sweeper, say) may go to the
/// store meanwhile, so callers take the least of several measurements.
async fn cost<T>(d: &TestDaemon, req: impl std::future::Future<Output = T>) -> (u64, T) {
    let store = &d.daemon.as_ref().unwrap().app.store;
    let before = store.round_trips();
    let out = req.await;
    (store.round_trips() - before, out)
}

/// The least of each column over the rounds: what each request itself costs.
fn least(rounds: &[Vec<(&'static str, u64)>]) -> Vec<(&'static str, u64)> {
    rounds[0]
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (*name, rounds.iter().map(|r| r[i].1).min().unwrap()))
        .collect()
}

async fn one_round(d: &TestDaemon, round: u32) -> Vec<(&'static str, u64)> {
    let number = |n: u32| format!("+120155501{round}{n}");
    let mut costs = vec![];

    // A browser without a cookie: the send creates its session in the same statement.
    let mut b = d.browser();
    let (n, (s, v)) = cost(d, b.send_code(&number(1))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert!(b.cookie.is_some(), "the new session's cookie");
    costs.push(("cookieless send", n));
    // With the cookie: the send resolves and slides the session in its statement.
    let (n, (s, v)) = cost(d, b.send_code(&number(2))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    costs.push(("cookie send", n));
    let (n, (s, v)) = cost(d, b.check_code(&number(1), "000000")).await;
    assert_eq!(
        (s, &v["status"]),
        (StatusCode::OK, &json!("pending")),
        "{v}"
    );
    costs.push(("cookie check", n));
    // A refused send (the cooldown) is one call too.
    let (n, (s, v)) = cost(d, b.send_code(&number(2))).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    costs.push(("refused send", n));

    // A stale cookie: a key no session has. The send creates a session under a new key.
    let stale = SessionKey::generate().as_str().to_owned();
    let mut old = Browser {
        cookie: Some(stale.clone()),
        ..d.browser()
    };
    let (n, (s, v)) = cost(d, old.check_code(&number(3), "000000")).await;
    assert_eq!(
        (s, &v["status"]),
        (StatusCode::NOT_FOUND, &json!("not_found")),
        "{v}"
    );
    costs.push(("stale-cookie check", n));
    let (n, (s, v)) = cost(d, old.send_code(&number(3))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert!(
        old.cookie.as_ref().is_some_and(|c| *c != stale),
        "a new key"
    );
    costs.push(("stale-cookie send", n));

    // Without any cookie a check has nothing to look up.
    let (n, (s, _)) = cost(d, d.browser().check_code(&number(4), "000000")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    costs.push(("cookieless check", n));

    // A backend naming its session.
    let (s, v) = d.api(Method::POST, "/v1/sessions", None).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["key"].as_str().unwrap().to_owned();
    let body = |phone: &str| json!({"phone": phone, "session": key});
    let (n, (s, v)) = cost(
        d,
        d.api(Method::POST, "/v1/verifications", Some(body(TEST_NUMBER))),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    costs.push(("backend send (test number)", n));
    let check = json!({"phone": TEST_NUMBER, "code": "000000", "session": key});
    let (n, (s, v)) = cost(
        d,
        d.api(Method::POST, "/v1/verifications/check", Some(check)),
    )
    .await;
    assert_eq!(
        (s, &v["status"]),
        (StatusCode::OK, &json!("pending")),
        "{v}"
    );
    costs.push(("backend check", n));
    // A code that goes out to a backend: the delivery it may follow is recorded after the
    // provider's answer (the id comes back in the body), one more call.
    let (n, (s, v)) = cost(
        d,
        d.api(Method::POST, "/v1/verifications", Some(body(&number(5)))),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert!(v["id"].is_string(), "{v}");
    costs.push(("backend send with a delivery id", n));
    let unknown = json!({"phone": number(6), "session": SessionKey::generate().as_str()});
    let (n, (s, v)) = cost(d, d.api(Method::POST, "/v1/verifications", Some(unknown))).await;
    assert_eq!(
        (s, &v["error"]),
        (StatusCode::NOT_FOUND, &json!("session_not_found")),
        "{v}"
    );
    costs.push(("backend send, unknown session", n));

    // The seed's routes take the same path.
    let mut seed = d.browser();
    let (n, r) = cost(
        d,
        seed.request(
            Method::GET,
            &format!("/sms_send/?phone=%2B{}", &number(7)[1..]),
            None,
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(seed.cookie.is_some());
    costs.push(("seed send", n));
    let path = format!("/sms_check/?phone=%2B{}&code=000000", &number(7)[1..]);
    let (n, r) = cost(d, seed.request(Method::GET, &path, None)).await;
    assert_eq!(r.status(), StatusCode::OK);
    costs.push(("seed check", n));
    costs
}

on_both_stores! {
    async fn a_send_and_a_check_are_one_store_call_each(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            c.verification
                .test_numbers
                .insert(TEST_NUMBER.into(), "123456".into());
        })
        .await
        else {
            return;
        };
        let mut rounds = vec![];
        for round in 0..3 {
            rounds.push(one_round(&d, round).await);
        }
        let got = least(&rounds);
        let want = [
            ("cookieless send", 1),
            ("cookie send", 1),
            ("cookie check", 1),
            ("refused send", 1),
            ("stale-cookie check", 1),
            ("stale-cookie send", 1),
            ("cookieless check", 0),
            ("backend send (test number)", 1),
            ("backend check", 1),
            ("backend send with a delivery id", 2),
            ("backend send, unknown session", 1),
            ("seed send", 1),
            ("seed check", 1),
        ];
        assert_eq!(got, want.to_vec());
        d.stop().await;
    }
}
