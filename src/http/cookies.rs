//! The `sessionid` cookie: reading it from requests and writing `Set-Cookie` values whose
//! `Max-Age` agrees with the stored expiry.

use http::HeaderValue;
use http::request::Parts;
use std::time::SystemTime;

use crate::config::SessionConfig;
use crate::session::{Expiry, Session, SessionKey};
use crate::time::secs_until;

/// Browsers cap cookie lifetimes at 400 days; a never-expiring session's cookie gets that.
const LONGEST_MAX_AGE: u64 = 400 * 86_400;

/// The session key from the request's cookies. Keys that cannot be ours are ignored, so a
/// forged or garbled cookie is the same as no cookie.
pub fn session_key(parts: &Parts, name: &str) -> Option<SessionKey> {
    parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .find_map(|(_, v)| SessionKey::parse(v.trim().trim_matches('"')))
}

/// `Max-Age` for a session's cookie: `None` for a browser-session cookie.
pub fn max_age(session: &Session, now: SystemTime) -> Option<u64> {
    match (session.expiry, session.expires_at) {
        (Expiry::Browser, _) => None,
        (_, Some(at)) => Some(secs_until(at, now).min(LONGEST_MAX_AGE)),
        (_, None) => Some(LONGEST_MAX_AGE),
    }
}

/// `Set-Cookie` value that stores `key` for as long as the session lives.
pub fn set_cookie(cfg: &SessionConfig, key: &SessionKey, session: &Session) -> HeaderValue {
    let mut v = format!("{}={}", cfg.full_cookie_name(), key.as_str());
    if let Some(age) = max_age(session, SystemTime::now()) {
        v.push_str(&format!("; Max-Age={age}"));
    }
    finish(cfg, v)
}

/// `Set-Cookie` value that deletes the cookie.
pub fn expire_cookie(cfg: &SessionConfig) -> HeaderValue {
    finish(
        cfg,
        format!(
            "{}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            cfg.full_cookie_name()
        ),
    )
}

fn finish(cfg: &SessionConfig, mut v: String) -> HeaderValue {
    v.push_str(&format!("; Path={}", cfg.cookie_path));
    if let Some(d) = &cfg.cookie_domain {
        v.push_str(&format!("; Domain={d}"));
    }
    v.push_str("; HttpOnly; SameSite=Lax");
    if cfg.cookie_secure {
        v.push_str("; Secure");
    }
    HeaderValue::from_str(&v).expect("cookie attributes are validated at start-up")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parts(cookie: &str) -> Parts {
        http::Request::builder()
            .header("cookie", cookie)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn finds_the_valid_key_among_cookies() {
        let key = SessionKey::generate();
        let p = parts(&format!(
            "a=1; sessionid=forged; sessionid={}; b=2",
            key.as_str()
        ));
        assert_eq!(session_key(&p, "sessionid"), Some(key));
        assert_eq!(
            session_key(&parts("sessionid=../../etc"), "sessionid"),
            None
        );
        assert_eq!(session_key(&parts("other=x"), "sessionid"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any `Cookie` header: no panic, and a key is found only if it is literally there.
        #[test]
        fn any_cookie_header_is_parsed_without_panic(
            header in "[ -~]{0,80}|(([a-z]{0,9}|sessionid)=\"?[a-z0-9]{30,34}\"?; ?){0,4}"
        ) {
            let Ok(value) = http::HeaderValue::from_str(&header) else { return Ok(()) };
            let mut req = http::Request::new(());
            req.headers_mut().insert(http::header::COOKIE, value);
            let (p, ()) = req.into_parts();
            if let Some(k) = session_key(&p, "sessionid") {
                proptest::prop_assert!(header.contains(&format!("sessionid={}", k.as_str()))
                    || header.contains(&format!("sessionid=\"{}", k.as_str())), "{}", header);
            }
        }
    }

    #[test]
    fn cookie_attributes_follow_config_and_expiry() {
        let cfg = SessionConfig::default();
        let key = SessionKey::generate();
        let now = SystemTime::now();
        let mut s = Session {
            id: 1,
            data: Default::default(),
            expiry: Expiry::Idle(300),
            created_at: now,
            expires_at: Some(now + Duration::from_secs(300)),
            refreshed: true,
            version: 1,
        };
        let v = set_cookie(&cfg, &key, &s).to_str().unwrap().to_owned();
        assert!(v.starts_with(&format!("sessionid={}", key.as_str())), "{v}");
        assert!(
            v.contains("Max-Age=300") || v.contains("Max-Age=299"),
            "{v}"
        );
        assert!(v.contains("HttpOnly") && v.contains("SameSite=Lax") && v.contains("Secure"));
        s.expiry = Expiry::Browser;
        assert!(
            !set_cookie(&cfg, &key, &s)
                .to_str()
                .unwrap()
                .contains("Max-Age")
        );
        s.expiry = Expiry::Never;
        s.expires_at = None;
        assert!(
            set_cookie(&cfg, &key, &s)
                .to_str()
                .unwrap()
                .contains("Max-Age=34560000")
        );
        let host = SessionConfig {
            cookie_host_prefix: true,
            ..cfg.clone()
        };
        let v = set_cookie(&host, &key, &s).to_str().unwrap().to_owned();
        assert!(v.starts_with("__Host-sessionid="), "{v}");
        assert!(v.contains("; Path=/;") && v.contains("; Secure") && !v.contains("Domain"));
        let insecure = SessionConfig {
            cookie_secure: false,
            ..cfg
        };
        assert!(
            !expire_cookie(&insecure)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }
}
