//! Fuzzing with proptest (cargo fuzz needs a nightly toolchain): random input through every
//! parser that sees the outside world — phone numbers, session keys, codes, the expiry JSON,
//! request paths and methods, and configuration files — with a fixed case budget so the suite
//! runs in CI in seconds. No input may panic, and whatever a parser accepts must be in the shape
//! its type promises and survive a round trip. (Cookie headers are fuzzed next to their private
//! parser in `src/http/cookies.rs`; whole raw requests in `tests/api/http_behaviour.rs`.)

use crate::common;

use figment::Figment;
use figment::providers::{Format, Toml};
use http::{Method, Request, Uri};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use proptest::prelude::*;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;
use verifyd::app::App;
use verifyd::code::Code;
use verifyd::config::Config;
use verifyd::http::HttpService;
use verifyd::phone::{NumberType, PhoneNumber, PhoneParser};
use verifyd::session::{Expiry, SessionKey};

const CASES: u32 = 512;

/// Strings that look like phone numbers much more often than uniform noise would.
fn phoneish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[+]?[0-9 ()\\-]{0,22}",
        "\\PC{0,24}",
        "[+]?[0-9]{0,3}[\u{ff10}-\u{ff19}\u{0660}-\u{0669}0-9]{0,16}",
    ]
}

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        Just(Value::String("default".into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request path built from the router's own vocabulary, noise and percent escapes.
fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("v1".to_owned()),
        Just("sessions".to_owned()),
        Just("data".to_owned()),
        Just("verifications".to_owned()),
        Just("check".to_owned()),
        Just("expiry".to_owned()),
        Just("sms_send".to_owned()),
        Just(String::new()),
        Just("%FF".to_owned()),
        Just("%2F%00".to_owned()),
        Just("..".to_owned()),
        "[a-z0-9]{32}",
        "[%a-zA-Z0-9]{0,6}",
        "\\PC{0,8}",
    ];
    prop::collection::vec(segment, 0..7).prop_map(|s| format!("/{}", s.join("/")))
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::HEAD),
        Just(Method::OPTIONS),
        "[A-Z]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

/// TOML-ish text: mostly well-formed tables with real and made-up keys and values of every
/// type, sometimes plain noise.
fn config_text() -> impl Strategy<Value = String> {
    let section = prop::sample::select(vec![
        "http",
        "store",
        "store.sqlite",
        "store.postgres",
        "session",
        "verification",
        "verification.test_numbers",
        "provider",
        "provider.mock",
        "provider.aliyun",
        "api.keys",
        "sweeper",
        "compat",
        "log",
        "nope",
    ]);
    let key = prop_oneof![
        prop::sample::select(vec![
            "listen",
            "max_body_bytes",
            "header_timeout",
            "request_timeout",
            "max_connections",
            "backend",
            "path",
            "synchronous",
            "url",
            "pool_size",
            "cookie_name",
            "cookie_domain",
            "cookie_path",
            "default_age",
            "max_lifetime",
            "code_length",
            "ttl",
            "resend_interval",
            "max_attempts",
            "default_region",
            "template",
            "kind",
            "outbox",
            "quiet",
            "endpoint",
            "timeout_ms",
            "max_total_ms",
            "timeout",
            "max_total",
            "interval",
            "batch_size",
            "seed_routes",
            "level",
            "format",
            "number_types",
            "\"+12015550123\"",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,8}",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "\\PC{0,16}".prop_map(|s| format!("{s:?}")),
        Just("\"127.0.0.1:0\"".to_owned()),
        Just("\"postgres\"".to_owned()),
        Just("\"CN\"".to_owned()),
        Just("[\"mobile\", \"premium_rate\"]".to_owned()),
        Just("[1, \"a\"]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("1.5".to_owned()),
    ];
    let table = (section, prop::collection::vec((key, value), 0..5)).prop_map(|(s, kv)| {
        let body: String = kv.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        format!("[{s}]\n{body}")
    });
    prop_oneof![
        4 => prop::collection::vec(table, 0..4).prop_map(|t| t.concat()),
        1 => "\\PC{0,64}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn phone_parsing_never_panics_and_yields_e164(input in phoneish()) {
        for region in [None, Some("CN"), Some("US"), Some("GB")] {
            let region = region.map(|r| r.parse().unwrap());
            let parser = PhoneParser::new(region, &NumberType::defaults());
            if let Ok(p) = parser.parse(&input) {
                let s = p.as_str();
                prop_assert!(s.starts_with('+') && s[1..].bytes().all(|b| b.is_ascii_digit()), "{s}");
                prop_assert!((4..=16).contains(&s.len()), "{s}");
                let again = PhoneNumber::parse_e164(s).unwrap();
                prop_assert_eq!(again.as_str(), s);
                let masked = p.masked();
                prop_assert!(masked.len() == s.len() && masked.contains("****"), "{}", masked);
            }
        }
    }

    #[test]
    fn session_keys_and_codes_accept_only_their_shape(input in "\\PC{0,40}|[a-z0-9]{30,34}|[0-9 ]{2,12}") {
        if let Some(k) = SessionKey::parse(&input) {
            prop_assert_eq!(k.as_str().len(), 32);
            prop_assert!(k.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        }
        if let Some(c) = Code::parse(&input) {
            prop_assert!((4..=10).contains(&c.expose().len()));
            prop_assert!(c.expose().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn expiry_json_round_trips_what_it_accepts(v in json(), text in "\\PC{0,20}") {
        if let Ok(e) = serde_json::from_value::<Expiry>(v) {
            let back: Expiry = serde_json::from_value(serde_json::to_value(e).unwrap()).unwrap();
            prop_assert_eq!(back, e);
            let (kind, idle) = e.to_parts();
            prop_assert_eq!(Expiry::from_parts(kind, idle), e);
        }
        let _ = serde_json::from_str::<Expiry>(&text);
    }

    #[test]
    fn config_loading_never_panics(text in config_text()) {
        let result = Config::from_figment(Figment::from(Toml::string(&text)));
        if let Err(e) = result {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

/// What a URI's path may not hold raw; `%` stays, so that the generator's escapes reach the
/// router as they are.
const NOT_IN_PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// The API service in-process, over SQLite in `dir`, with or without the seed routes and the
/// demo page.
async fn api(dir: &tempfile::TempDir, optional_routes: bool) -> HttpService {
    let (mut config, _) = common::daemon::store_config(verifyd::config::Backend::Sqlite, dir)
        .await
        .expect("SQLite needs no server");
    config.compat.seed_routes = optional_routes;
    config.http.demo_page = optional_routes;
    let app = App::build(config, true).await.expect("the app builds");
    verifyd::http::api(Arc::new(app))
}

/// Any method on any path goes through the route table and the layers around it to a 2xx-4xx
/// answer: no panic, no 500, whatever the router or a handler is handed.
#[test]
fn routing_never_panics() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let services = [
        rt.block_on(api(&dirs[0], false)),
        rt.block_on(api(&dirs[1], true)),
    ];
    let config = ProptestConfig::with_cases(CASES);
    proptest!(config, |(m in method(), p in path(), optional in any::<bool>())| {
        let uri: Uri = utf8_percent_encode(&p, NOT_IN_PATH).to_string().parse().unwrap();
        let req = Request::builder()
            .method(m.clone())
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let service = services[usize::from(optional)].clone();
        let resp = rt.block_on(service.oneshot(req)).unwrap();
        prop_assert!(resp.status().as_u16() < 500, "{} for {} {}", resp.status(), m, p);
    });
}
