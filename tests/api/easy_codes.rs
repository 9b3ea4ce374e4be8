//! Codes that are easy to receive and type, over real HTTP on both stores: same-code resends
//! (the first SMS still works, its life extended but capped, attempts carried over; a new code
//! after expiry; `new_code` unchanged), letter codes accepted in any case and refused outside
//! their alphabet, the `@domain #code` line, and the template chosen by `Accept-Language`.

use crate::common;

use common::daemon::{Browser, TestDaemon, wrong_code as wrong};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use verifyd::code::Alphabet;
use verifyd::config::{Backend, Config, ResendMode};

const A: &str = "+8613800138000";
const B: &str = "+8613800138001";

async fn start(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestDaemon> {
    TestDaemon::start(backend, |c| {
        // Long codes: two independently drawn codes are then never equal by chance.
        c.verification.code_length = 10;
        c.per_phone.network_max_failed_checks = 0;
        tweak(c);
    })
    .await
}

async fn send(b: &mut Browser, phone: &str) -> (StatusCode, Value) {
    b.post("/v1/verifications", json!({ "phone": phone })).await
}

async fn check(b: &mut Browser, phone: &str, code: &str) -> (StatusCode, Value) {
    b.post(
        "/v1/verifications/check",
        json!({ "phone": phone, "code": code }),
    )
    .await
}

fn codes_to(d: &TestDaemon, phone: &str) -> Vec<String> {
    d.messages()
        .iter()
        .filter(|m| m["to"] == phone)
        .map(|m| m["code"].as_str().unwrap().to_owned())
        .collect()
}

fn pending(attempts_left: u32) -> (StatusCode, Value) {
    (
        StatusCode::OK,
        json!({ "status": "pending", "attempts_left": attempts_left }),
    )
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// A send without a session, with the given `Accept-Language` and body; the text sent.
async fn text_for(d: &TestDaemon, phone: &str, body: Value, lang: Option<&str>) -> String {
    let mut req = d.http.post(d.url("/v1/verifications")).json(&body);
    if let Some(l) = lang {
        req = req.header("accept-language", l);
    }
    let resp = req.send().await.expect("request sent");
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "{phone} {lang:?}");
    let texts: Vec<String> = d
        .messages()
        .iter()
        .filter(|m| m["to"] == phone)
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    texts.last().cloned().expect("a message was sent")
}

on_both_stores! {
    async fn a_resend_sends_the_same_code_and_the_first_sms_still_works(backend: Backend) {
        let Some(d) = start(backend, |c| {
            c.verification.ttl = 4;
            c.verification.resend_interval = 1;
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(send(&mut b, A).await.0, StatusCode::ACCEPTED);
        let first = codes_to(&d, A)[0].clone();
        assert_eq!(check(&mut b, A, &wrong(&first)).await, pending(4));
        assert_eq!(check(&mut b, A, &wrong(&first)).await, pending(3));

        sleep_ms(1100).await;
        let (status, body) = send(&mut b, A).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["expires_in"], 4, "{body}");
        let codes = codes_to(&d, A);
        assert_eq!(codes.len(), 2, "a second SMS went out");
        assert_eq!(codes[1], first, "with the same code");

        // Past the first send's expiry (4 s) the code lives on, from the resend.
        sleep_ms(3300).await;
        // The attempts carried over: the wrong codes before the resend still count.
        assert_eq!(check(&mut b, A, &wrong(&first)).await, pending(2));
        let (status, body) = check(&mut b, A, &first).await;
        assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("approved")), "{body}");
        d.stop().await;
    }

    async fn resends_never_extend_a_code_past_its_cap(backend: Backend) {
        let Some(d) = start(backend, |c| {
            c.verification.ttl = 4;
            c.verification.resend_interval = 1;
            c.verification.max_code_lifetime = Some(5);
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(send(&mut b, A).await.0, StatusCode::ACCEPTED);
        let first = codes_to(&d, A)[0].clone();
        // About 3.9 s of the cap left: the same code, for what is left of it.
        sleep_ms(1100).await;
        let (status, body) = send(&mut b, A).await;
        assert_eq!((status, body["expires_in"].as_u64()), (StatusCode::ACCEPTED, Some(3)), "{body}");
        assert_eq!(codes_to(&d, A)[1], first);
        assert_eq!(check(&mut b, A, &wrong(&first)).await, pending(4));
        // About 1.7 s left, under half a ttl: a new code, with the attempts carried over.
        sleep_ms(2200).await;
        let (status, body) = send(&mut b, A).await;
        assert_eq!((status, body["expires_in"].as_u64()), (StatusCode::ACCEPTED, Some(4)), "{body}");
        let third = codes_to(&d, A)[2].clone();
        assert_ne!(third, first, "a new code once the cap is near");
        assert_eq!(check(&mut b, A, &first).await, pending(3), "the old code is a wrong one now");
        // The new code outlives the old one's cap.
        sleep_ms(2000).await;
        let (_, body) = check(&mut b, A, &third).await;
        assert_eq!(body["status"], "approved", "{body}");
        d.stop().await;
    }

    async fn after_expiry_a_resend_draws_a_new_code(backend: Backend) {
        let Some(d) = start(backend, |c| {
            c.verification.ttl = 2;
            c.verification.resend_interval = 1;
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(send(&mut b, A).await.0, StatusCode::ACCEPTED);
        let first = codes_to(&d, A)[0].clone();
        assert_eq!(check(&mut b, A, &wrong(&first)).await, pending(4));
        sleep_ms(2300).await;
        assert_eq!(send(&mut b, A).await.0, StatusCode::ACCEPTED);
        let second = codes_to(&d, A)[1].clone();
        assert_ne!(second, first, "an expired code is never sent again");
        // A new verification: full attempts, and the old code is just a wrong one.
        assert_eq!(check(&mut b, A, &first).await, pending(4));
        let (_, body) = check(&mut b, A, &second).await;
        assert_eq!(body["status"], "approved", "{body}");
        d.stop().await;
    }

    async fn after_approval_or_exhaustion_no_code_is_sent_again(backend: Backend) {
        let Some(d) = start(backend, |c| {
            c.verification.ttl = 30;
            c.verification.resend_interval = 1;
            c.verification.max_attempts = 2;
        })
        .await
        else {
            return;
        };
        // Approved, then asked again: a new code.
        let mut b = d.browser();
        assert_eq!(send(&mut b, A).await.0, StatusCode::ACCEPTED);
        let first = codes_to(&d, A)[0].clone();
        assert_eq!(check(&mut b, A, &first).await.1["status"], "approved");
        sleep_ms(1100).await;
        assert_eq!(send(&mut b, A).await.0, StatusCode::ACCEPTED);
        let second = codes_to(&d, A)[1].clone();
        assert_ne!(second, first, "a used code is never sent again");
        assert_eq!(check(&mut b, A, &first).await, pending(1));

        // A guesser who used up the attempts gets no resend of the code it failed on.
        let mut g = d.browser();
        assert_eq!(send(&mut g, B).await.0, StatusCode::ACCEPTED);
        let code_b = codes_to(&d, B)[0].clone();
        check(&mut g, B, &wrong(&code_b)).await;
        check(&mut g, B, &wrong(&code_b)).await;
        sleep_ms(1100).await;
        let (status, body) = send(&mut g, B).await;
        assert_eq!((status, &body["error"]), (StatusCode::TOO_MANY_REQUESTS, &json!("too_many_attempts")));
        assert_eq!(codes_to(&d, B).len(), 1);
        d.stop().await;
    }

    async fn new_code_mode_draws_a_new_code_on_every_send(backend: Backend) {
        let Some(d) = start(backend, |c| {
            c.verification.ttl = 30;
            c.verification.resend_interval = 1;
            c.verification.resend = ResendMode::NewCode;
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(send(&mut b, A).await.0, StatusCode::ACCEPTED);
        let first = codes_to(&d, A)[0].clone();
        assert_eq!(check(&mut b, A, &wrong(&first)).await, pending(4));
        sleep_ms(1100).await;
        let (status, body) = send(&mut b, A).await;
        assert_eq!((status, body["expires_in"].as_u64()), (StatusCode::ACCEPTED, Some(30)));
        let second = codes_to(&d, A)[1].clone();
        assert_ne!(second, first);
        assert_eq!(check(&mut b, A, &first).await, pending(3), "the first code died");
        assert_eq!(check(&mut b, A, &second).await.1["status"], "approved");
        d.stop().await;
    }

    async fn letter_codes_are_accepted_in_any_case_and_refused_outside_their_set(backend: Backend) {
        let Some(d) = start(backend, |c| {
            c.verification.code_length = 8;
            c.verification.alphabet = Alphabet::Alphanumeric;
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(send(&mut b, A).await.0, StatusCode::ACCEPTED);
        let code = codes_to(&d, A)[0].clone();
        assert!(
            code.len() == 8 && code.bytes().all(|c| b"23456789ABCDEFGHJKMNPQRSTUVWXYZ".contains(&c)),
            "{code}"
        );
        // Look-alikes and other symbols are not codes: 422, and no attempt is used.
        for bad in ["0OIL1234", "ABCD-EFG", "ABCDEFGÄ", "ABC"] {
            let (status, body) = check(&mut b, A, bad).await;
            assert_eq!((status, &body["error"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("invalid_code")), "{bad}");
            assert!(body["message"].as_str().unwrap().contains("without I, L and O"), "{body}");
        }
        let lower = code.to_ascii_lowercase();
        let (_, body) = check(&mut b, A, &format!(" {lower} ")).await;
        assert_eq!(body["status"], "approved", "lower case is the same code: {body}");

        // The seed's check route too.
        let mut seed = d.browser();
        let r = seed.request(Method::GET, "/sms_send/?phone=%2B8613800138001", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let code_b = codes_to(&d, B)[0].to_ascii_lowercase();
        let r = seed
            .request(Method::GET, &format!("/sms_check/?phone=%2B8613800138001&code={code_b}"), None)
            .await;
        assert_eq!(r.text().await.unwrap(), r#"{"result": "OK"}"#);
        d.stop().await;
    }

    async fn digit_codes_refuse_letters(backend: Backend) {
        let Some(d) = start(backend, |c| c.verification.code_length = 6).await else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(send(&mut b, A).await.0, StatusCode::ACCEPTED);
        let (status, body) = check(&mut b, A, "ABC234").await;
        assert_eq!((status, &body["error"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("invalid_code")));
        assert_eq!(body["message"], "codes are 4 to 10 digits");
        let code = codes_to(&d, A)[0].clone();
        assert!(code.bytes().all(|c| c.is_ascii_digit()), "{code}");
        assert_eq!(check(&mut b, A, &code).await.1["status"], "approved");
        d.stop().await;
    }

    async fn the_origin_bound_line_ends_every_message(backend: Backend) {
        let Some(d) = start(backend, |c| {
            c.verification.otp_domain = Some("login.example.com".into());
            c.verification.templates.insert("zh".parse().unwrap(), "您的验证码是{code}。".into());
        })
        .await
        else {
            return;
        };
        let en = text_for(&d, A, json!({ "phone": A }), None).await;
        let code = codes_to(&d, A)[0].clone();
        assert_eq!(
            en,
            format!("Your verification code is {code}. It expires in 5 minutes.\n@login.example.com #{code}")
        );
        let zh = text_for(&d, B, json!({ "phone": B, "locale": "zh-CN" }), None).await;
        let code = codes_to(&d, B)[0].clone();
        assert_eq!(zh, format!("您的验证码是{code}。\n@login.example.com #{code}"));
        d.stop().await;
    }

    async fn accept_language_chooses_the_template_when_no_locale_is_named(backend: Backend) {
        let Some(d) = start(backend, |c| {
            c.verification.templates.insert("zh".parse().unwrap(), "您的验证码是{code}。".into());
            c.verification.templates.insert("fr".parse().unwrap(), "Votre code est {code}.".into());
            c.verification.templates.insert("+44".parse().unwrap(), "UK code {code}.".into());
        })
        .await
        else {
            return;
        };
        let phones = [
            "+8613800138010", "+8613800138011", "+8613800138012", "+8613800138013",
            "+8613800138014", "+447400123456", "+8613800138015",
        ];
        let body = |p: &str| json!({ "phone": p });
        // The q-values decide, not the order.
        let t = text_for(&d, phones[0], body(phones[0]), Some("fr;q=0.5, zh-CN;q=0.9, en;q=0.1")).await;
        assert!(t.starts_with("您的验证码是"), "{t}");
        let t = text_for(&d, phones[1], body(phones[1]), Some("de-DE, fr-CA;q=0.8")).await;
        assert!(t.starts_with("Votre code"), "{t}");
        // A named locale wins over the header.
        let named = json!({ "phone": phones[2], "locale": "fr" });
        let t = text_for(&d, phones[2], named, Some("zh-CN")).await;
        assert!(t.starts_with("Votre code"), "{t}");
        // Refused (q=0), wildcard and unknown languages fall through to the default.
        let t = text_for(&d, phones[3], body(phones[3]), Some("zh;q=0, *, de")).await;
        assert!(t.starts_with("Your verification code"), "{t}");
        // A header far beyond what browsers send is cut short, not an error; the languages
        // it lists after the first 16 are not looked at.
        let huge = format!("{}, zh", vec!["xx;q=0.9"; 400].join(", "));
        let t = text_for(&d, phones[4], body(phones[4]), Some(&huge)).await;
        assert!(t.starts_with("Your verification code"), "{t}");
        // No template for the header's languages: the number's prefix decides, as before.
        let t = text_for(&d, phones[5], body(phones[5]), Some("de")).await;
        assert!(t.starts_with("UK code"), "{t}");
        // The seed's send follows the header as well.
        seed_send(&d, phones[6]).await;
        let t = d.messages().last().unwrap()["text"].as_str().unwrap().to_owned();
        assert!(t.starts_with("您的验证码是"), "{t}");
        d.stop().await;
    }
}

/// The seed's `/sms_send/` for `phone`, from a browser whose first language is Chinese.
async fn seed_send(d: &TestDaemon, phone: &str) {
    let resp = d
        .http
        .get(d.url(&format!("/sms_send/?phone={}", phone.replace('+', "%2B"))))
        .header("accept-language", "zh-CN,zh;q=0.9,en;q=0.8")
        .send()
        .await
        .expect("request sent");
    assert_eq!(resp.status(), StatusCode::OK, "seed routes are on");
}
