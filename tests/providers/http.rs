//! `kind = "http"` end to end: the recipes of docs/providers.md (Twilio, Vonage, a plain JSON gateway), read
//! from the document itself, run in a real daemon against fakes that check what each API documents;
//! each error class as the client sees it; retries; failover between two HTTP providers; bad
//! templates stopping the daemon at start-up; and nothing secret reaching the logs.

use crate::common;
use verifyd::seconds::Seconds;

use common::daemon::TestDaemon;
use common::fake_sms_apis::{self as apis, FakeApi};
use figment::Figment;
use figment::providers::{Format, Toml};
use reqwest::StatusCode;
use serde_json::{Value, json};
use verifyd::config::{Backend, Config};

const US: &str = "+12015550123";

/// Answers a fake is told to give, one per request.
type Answers = Vec<(u16, Value)>;

/// The ```toml block of docs/providers.md that starts with `# recipe: <name>`.
fn recipe(name: &str) -> String {
    let readme = include_str!("../../docs/providers.md");
    let marker = format!("```toml\n# recipe: {name}\n");
    let start = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/providers.md has no {name} recipe"))
        + "```toml\n".len();
    let len = readme[start..].find("```").unwrap();
    readme[start..start + len].to_owned()
}

/// The recipe pointed at the fake, with its secret added as a credential would, loaded and
/// validated the way the daemon loads its file.
fn load(recipe: &str, real_base: &str, fake: &FakeApi, provider: &str, secret: &str) -> Config {
    let text = recipe.replace(real_base, &fake.gateway.base());
    let fig = Figment::from(Toml::string(&text)).merge(Toml::string(&format!(
        "[providers.{provider}.http]\nsecret = {secret:?}\n"
    )));
    Config::from_figment(fig).unwrap_or_else(|e| panic!("the recipe does not load: {e}"))
}

/// A daemon (SQLite) running `loaded`'s providers and routes, with short retry budgets.
async fn daemon(loaded: Config, max_total_ms: u64) -> TestDaemon {
    TestDaemon::start(Backend::Sqlite, move |c| {
        c.providers = loaded.providers;
        c.routes = loaded.routes;
        for p in c.providers.values_mut() {
            p.timeout = Seconds::from_millis(max_total_ms);
            if let Some(h) = &mut p.http {
                h.timeout = Seconds::from_millis(500);
                h.max_total = Seconds::from_millis(max_total_ms);
            }
        }
    })
    .await
    .expect("SQLite daemons always start")
}

async fn twilio(token: &str) -> (FakeApi, TestDaemon) {
    let fake = apis::start_twilio().await;
    let mut text = recipe("twilio").replace("ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", apis::TWILIO_SID);
    text = text.replace("+15017122661", apis::TWILIO_FROM);
    let c = load(&text, "https://api.twilio.com", &fake, "twilio", token);
    (fake, daemon(c, 2000).await)
}

async fn vonage(secret: &str) -> (FakeApi, TestDaemon) {
    let fake = apis::start_vonage().await;
    let c = load(
        &recipe("vonage"),
        "https://rest.nexmo.com",
        &fake,
        "vonage",
        secret,
    );
    (fake, daemon(c, 2000).await)
}

async fn json_gateway() -> (FakeApi, TestDaemon) {
    let fake = apis::start_json_gateway().await;
    let c = load(
        &recipe("json-gateway"),
        "https://sms.example.net",
        &fake,
        "gateway",
        apis::JSON_TOKEN,
    );
    (fake, daemon(c, 2000).await)
}

fn code_in(text: &str) -> String {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    digits[..6].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_recipe_sends_what_twilio_documents_and_the_code_approves() {
    let logs = common::logs::capture("debug");
    let (fake, d) = twilio(apis::TWILIO_TOKEN).await;
    let mut browser = d.browser();
    let (status, body) = browser.send_code(US).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(fake.violations(), Vec::<String>::new());
    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    let (to, text, sid) = &messages[0];
    assert_eq!(to, US, "To goes in E.164 with its +");
    let (seen, _) = &fake.gateway.seen()[0];
    let form = seen.form();
    let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["Body", "From", "To"]);
    assert!(form.contains(&("From".into(), apis::TWILIO_FROM.into())));
    browser.wrong_then_right(US, &code_in(text)).await;
    d.stop().await;
    // The message id came from the JSON pointer and was kept with the send.
    let logged = logs.text();
    assert!(logged.contains(sid.as_str()), "{logged}");
}

/// Sends one code to `phone` through `fake` after `prepare`; the client's answer and how many
/// requests the fake saw.
async fn outcome(fake: &FakeApi, d: TestDaemon, phone: &str) -> (StatusCode, Value, usize) {
    let (status, body) = d.browser().send_code(phone).await;
    d.stop().await;
    (status, body, fake.requests())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_errors_map_onto_the_failure_classes() {
    // (forced answers, client status, client error, requests the fake saw)
    let cases: Vec<(Answers, StatusCode, &str, usize)> = vec![
        (
            vec![apis::twilio_error(
                400,
                21211,
                &format!("The 'To' number {US} is not a valid phone number."),
            )],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_phone",
            1,
        ),
        (
            vec![apis::twilio_error(
                400,
                21610,
                "Attempt to send to unsubscribed recipient",
            )],
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_phone",
            1,
        ),
        (
            vec![apis::twilio_error(429, 20429, "Too Many Requests")],
            StatusCode::TOO_MANY_REQUESTS,
            "provider_rate_limited",
            1,
        ),
        (
            vec![apis::twilio_error(400, 21608, "The number is unverified")],
            StatusCode::BAD_GATEWAY,
            "provider_unavailable",
            1,
        ),
        (
            // 5xx is retried within the budget, then the send goes through.
            vec![
                apis::twilio_error(500, 20500, "Internal Server Error"),
                apis::twilio_error(503, 20503, "Service Unavailable"),
            ],
            StatusCode::ACCEPTED,
            "",
            3,
        ),
    ];
    for (answers, want_status, want_error, want_requests) in cases {
        let (fake, d) = twilio(apis::TWILIO_TOKEN).await;
        fake.answer_next(answers.clone());
        let (status, body, n) = outcome(&fake, d, US).await;
        assert_eq!(status, want_status, "{answers:?}: {body}");
        if !want_error.is_empty() {
            assert_eq!(body["error"], want_error, "{answers:?}");
        }
        assert_eq!(n, want_requests, "{answers:?}");
        assert_eq!(fake.violations(), Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_with_a_wrong_token_is_502_and_not_retried() {
    let (fake, d) = twilio("not-the-token").await;
    let (status, body, n) = outcome(&fake, d, US).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "provider_unavailable");
    assert_eq!(n, 1);
    assert_eq!(
        fake.gateway.seen()[0].1,
        401,
        "the fake refused the credentials"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_server_errors_forever_are_503_within_the_budget() {
    let (fake, d) = twilio(apis::TWILIO_TOKEN).await;
    fake.answer_always(
        500,
        json!({"code": 20500, "message": "Internal Server Error", "status": 500}),
    );
    let started = std::time::Instant::now();
    let (status, body, n) = outcome(&fake, d, US).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(n >= 2, "retried: {n}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vonage_recipe_sends_digits_and_reads_the_status_field() {
    let (fake, d) = vonage(apis::VONAGE_SECRET).await;
    let mut browser = d.browser();
    let (status, body) = browser.send_code(US).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(fake.violations(), Vec::<String>::new());
    let (to, text, _) = fake.messages()[0].clone();
    assert_eq!(to, &US[1..], "to goes without its +");
    browser.wrong_then_right(US, &code_in(&text)).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vonage_status_codes_map_onto_the_failure_classes() {
    let cases: Vec<(Answers, StatusCode, usize)> = vec![
        (
            vec![apis::vonage_error("7", "Number barred.")],
            StatusCode::UNPROCESSABLE_ENTITY,
            1,
        ),
        (
            vec![apis::vonage_error("33", "Number de-activated.")],
            StatusCode::UNPROCESSABLE_ENTITY,
            1,
        ),
        (
            vec![apis::vonage_error("29", "Non White-listed Destination")],
            StatusCode::BAD_GATEWAY,
            1,
        ),
        (
            vec![apis::vonage_error("9", "Quota Exceeded")],
            StatusCode::BAD_GATEWAY,
            1,
        ),
        (
            vec![apis::vonage_error("1", "Throughput Rate Exceeded")],
            StatusCode::ACCEPTED,
            2,
        ),
        (
            vec![apis::vonage_error("5", "Internal Error")],
            StatusCode::ACCEPTED,
            2,
        ),
    ];
    for (answers, want, requests) in cases {
        let (fake, d) = vonage(apis::VONAGE_SECRET).await;
        fake.answer_next(answers.clone());
        let (status, body, n) = outcome(&fake, d, US).await;
        assert_eq!(status, want, "{answers:?}: {body}");
        assert_eq!(n, requests, "{answers:?}");
    }
    let (fake, d) = vonage("wrong-secret").await;
    let (status, _, n) = outcome(&fake, d, US).await;
    assert_eq!(
        (status, n),
        (StatusCode::BAD_GATEWAY, 1),
        "status 4, bad credentials"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_gateway_recipe_sends_a_json_object_and_retries_with_the_same_reference() {
    let (fake, d) = json_gateway().await;
    fake.answer_next(vec![apis::json_error(503, "unavailable")]);
    let mut browser = d.browser();
    let (status, body) = browser.send_code("+8613800138000").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(fake.violations(), Vec::<String>::new());
    let seen = fake.gateway.seen();
    assert_eq!(seen.len(), 2);
    let refs: Vec<String> = seen
        .iter()
        .map(|(r, _)| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["reference"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(refs[0], refs[1], "a retry keeps its request id");
    assert_eq!(refs[0].len(), 36);
    let (to, text, _) = fake.messages()[0].clone();
    assert_eq!(to, "+8613800138000");
    browser
        .wrong_then_right("+8613800138000", &code_in(&text))
        .await;
    d.stop().await;

    let (fake, d) = json_gateway().await;
    fake.answer_next(vec![apis::json_error(400, "invalid_recipient")]);
    let (status, body, _) = outcome(&fake, d, US).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

/// Two JSON gateways on one route, `a` then `b`.
async fn pair() -> (FakeApi, FakeApi, TestDaemon) {
    let a = apis::start_json_gateway().await;
    let b = apis::start_json_gateway().await;
    // The recipe's tables end with [providers.<name>.http], so a secret appended before
    // [routes] lands in it.
    let one = |name: &str, fake: &FakeApi| {
        let text = recipe("json-gateway")
            .replace("https://sms.example.net", &fake.gateway.base())
            .replace("providers.gateway", &format!("providers.{name}"));
        let tables = text.split("[routes]").next().unwrap().to_owned();
        format!("{tables}secret = {:?}\n", apis::JSON_TOKEN)
    };
    let text = format!(
        "{}{}[routes]\n\"*\" = [\"a\", \"b\"]\n",
        one("a", &a),
        one("b", &b)
    );
    let loaded = Config::from_figment(Figment::from(Toml::string(&text)))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    (a, b, daemon(loaded, 1500).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_answering_5xx_fails_over_to_the_next_http_provider() {
    let (a, b, d) = pair().await;
    a.answer_always(503, json!({"error": {"type": "unavailable"}}));
    let (status, body) = d.browser().send_code(US).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(a.requests() >= 1);
    assert!(a.messages().is_empty());
    assert_eq!(b.messages().len(), 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_error_does_not_fail_over() {
    let (a, b, d) = pair().await;
    a.answer_always(400, json!({"error": {"type": "invalid_recipient"}}));
    let (status, body) = d.browser().send_code(US).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "invalid_phone");
    assert_eq!(a.requests(), 1);
    assert_eq!(
        b.requests(),
        0,
        "the second gateway would refuse the number too"
    );
    d.stop().await;
}

/// An attacker who controls the number and the locale cannot break out of the body: the
/// daemon refuses odd numbers before any provider, and what reaches the body is encoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_cannot_change_the_request() {
    let (fake, d) = json_gateway().await;
    let mut browser = d.browser();
    for phone in [
        "+12015550123\",\"to\":\"+19999999999",
        "+1 201 555 0123&text=x",
        "+12015550123%0d%0aX-Injected: 1",
    ] {
        let (status, _) = browser.send_code(phone).await;
        assert!(status.is_client_error(), "{phone}: {status}");
    }
    let resp = d
        .http
        .post(d.url("/v1/verifications"))
        .json(&json!({"phone": US, "locale": "\"}, \"to\": \"+19999999999"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().as_u16() < 500, "{}", resp.status());
    assert_eq!(fake.violations(), Vec::<String>::new());
    for (to, _, _) in fake.messages() {
        assert_eq!(to, US);
    }
    for (seen, _) in fake.gateway.seen() {
        assert!(seen.header("x-injected").is_none());
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_neither_the_code_nor_the_secret_nor_the_number() {
    let logs = common::logs::capture("debug");
    let (fake, d) = twilio(apis::TWILIO_TOKEN).await;
    fake.answer_next(vec![
        apis::twilio_error(500, 20500, "Internal Server Error"),
        apis::twilio_error(
            400,
            21211,
            &format!("The 'To' number {US} is not a valid phone number."),
        ),
    ]);
    let (status, _) = d.browser().send_code(US).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = d.browser().send_code("+12015550124").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    d.stop().await;
    let text = logs.text();
    assert!(text.contains("21211"), "{text}");
    let mut secrets = vec![
        "2015550123".to_owned(),
        "2015550124".to_owned(),
        apis::TWILIO_TOKEN.to_owned(),
    ];
    for (seen, _) in fake.gateway.seen() {
        secrets.push(seen.header("authorization").unwrap().to_owned());
        let body = seen.form();
        let message = &body.iter().find(|(k, _)| k == "Body").unwrap().1;
        let code = code_in(message);
        assert!(
            !common::logs::mentions_code(&text, &code),
            "{code:?} leaked into the logs:\n{text}"
        );
    }
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "{s:?} leaked into the logs:\n{text}"
        );
    }
}

/// A config that `verifyd` refuses at start-up, with the key it must name.
#[test]
fn bad_templates_stop_the_daemon_naming_the_key() {
    let gateway = "[providers.gw]\nkind = \"http\"\n[routes]\n\"*\" = [\"gw\"]\n";
    for (http, key) in [
        (
            "url = \"https://x.example/{phone}\"",
            "providers.gw.http.url",
        ),
        ("body = { to = \"{to}\" }", "providers.gw.http.url"),
        (
            "url = \"https://x.example/\"\nbody = { text = \"{code\" }",
            "providers.gw.http.body.text",
        ),
        (
            "url = \"https://x.example/\"\nbody = { text = \"{txt}\" }",
            "providers.gw.http.body.text",
        ),
        (
            "url = \"https://x.example/\"\nencoding = \"form\"\nbody = { to = { e164 = \"{to}\" } }",
            "providers.gw.http.body.to",
        ),
        (
            "url = \"https://x.example/\"\nmessage_id_pointer = \"sid\"",
            "providers.gw.http.message_id_pointer",
        ),
        (
            "url = \"https://x.example/\"\nheaders = { X-To = \"{nope}\" }",
            "providers.gw.http.headers.X-To",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            format!("[store.sqlite]\npath = \"v.db\"\n{gateway}[providers.gw.http]\n{http}\n"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_verifyd"))
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{http}: started");
        assert!(stderr.contains(key), "{http}: {stderr}");
        assert!(
            !dir.path().join("v.db").exists(),
            "{http}: the store was opened"
        );
    }
}

/// The secret from a `_file` or a credential, like every other secret.
#[test]
fn the_secret_comes_from_a_file_or_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-the-file\n").unwrap();
    // Inserted at the end of the recipe's [providers.gateway.http] table.
    let text = recipe("json-gateway").replace(
        "[routes]",
        &format!("secret_file = {:?}\n[routes]", file.display().to_string()),
    );
    let c = Config::from_figment(Figment::from(Toml::string(&text))).unwrap();
    let h = c.providers["gateway"].http.as_ref().unwrap();
    assert_eq!(h.secret.expose(), "from-the-file");
    assert!(!format!("{c:?}").contains("from-the-file"));

    let creds = tempfile::tempdir().unwrap();
    std::fs::write(
        creds.path().join("providers.gateway.http.secret"),
        "from-systemd\n",
    )
    .unwrap();
    let mut fig = Figment::from(Toml::string(&recipe("json-gateway")));
    for c in verifyd::credentials::from_dir(creds.path()).unwrap() {
        fig = fig.merge(c);
    }
    let c = Config::from_figment(fig).unwrap();
    assert_eq!(
        c.providers["gateway"]
            .http
            .as_ref()
            .unwrap()
            .secret
            .expose(),
        "from-systemd"
    );

    // Without it, the recipe names the missing key.
    let err = Config::from_figment(Figment::from(Toml::string(&recipe("json-gateway"))))
        .unwrap_err()
        .to_string();
    assert!(err.contains("providers.gateway.http.secret"), "{err}");
}
