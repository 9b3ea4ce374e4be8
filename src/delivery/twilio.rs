//! Twilio's `StatusCallback` for messages sent through the HTTP provider: a form POST signed
//! with `X-Twilio-Signature` = base64(HMAC-SHA1(Auth Token, URL + each parameter's name and
//! value, sorted by name)). The URL is the one Twilio was given, so it is configured, not
//! reconstructed from the request (a proxy in front changes scheme, host and port).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::{DeliveryState, ReceiptUpdate};

/// Checks `twilio_status_callback` of instance `name` at start-up.
pub fn check_config(url: &str, name: &str, no_secret: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    let segments: Vec<&str> = parsed.path().trim_start_matches('/').split('/').collect();
    if !matches!(segments.as_slice(), ["v1", "receipts", n, last] if *n == name && !last.is_empty())
    {
        return Err(format!(
            "its path must be /v1/receipts/{name}/<segment> (the route this instance's receipts arrive on)"
        ));
    }
    if no_secret {
        return Err("Twilio signs with the Auth Token: set the secret (auth = \"basic\")".into());
    }
    Ok(())
}

/// The signature Twilio sends for a POST of `params` to `url`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `given` is Twilio's signature of this request (constant-time).
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], given: &str) -> bool {
    bool::from(
        signature(auth_token, url, params)
            .as_bytes()
            .ct_eq(given.as_bytes()),
    )
}

/// The receipt in a verified callback's parameters; `None` without `MessageSid` or with a
/// status that says nothing about delivery.
pub fn receipt(provider: &str, params: &[(String, String)]) -> Option<ReceiptUpdate> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let sid = get("MessageSid").filter(|s| !s.is_empty() && s.len() <= 64)?;
    let status = get("MessageStatus")?;
    let state = match status {
        "accepted" | "scheduled" | "queued" => DeliveryState::Queued,
        "sending" | "sent" => DeliveryState::Sent,
        "delivered" | "read" => DeliveryState::Delivered,
        "undelivered" | "failed" => DeliveryState::Failed,
        _ => return None,
    };
    let code = get("ErrorCode")
        .filter(|c| !c.is_empty())
        .unwrap_or(status)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect::<String>();
    Some(ReceiptUpdate {
        provider: provider.to_owned(),
        message_id: sid.to_owned(),
        state,
        error_code: Some(code),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// The worked example of Twilio's webhook security documentation.
    #[test]
    fn documented_example() {
        let params = p(&[
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("Caller", "+12349013030"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            signature("12345", url, &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert!(verify(
            "12345",
            url,
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!verify(
            "12346",
            url,
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!verify(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        let mut tampered = params.clone();
        tampered[2].1 = "9999".into();
        assert!(!verify(
            "12345",
            url,
            &tampered,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!verify("12345", url, &params, ""));
    }

    #[test]
    fn statuses_map_onto_delivery_states() {
        let r = |status: &str, code: &str| {
            receipt(
                "tw",
                &p(&[
                    ("MessageSid", "SM1"),
                    ("MessageStatus", status),
                    ("ErrorCode", code),
                ]),
            )
        };
        assert_eq!(r("delivered", "").unwrap().state, DeliveryState::Delivered);
        assert_eq!(r("sent", "").unwrap().state, DeliveryState::Sent);
        let failed = r("undelivered", "30003").unwrap();
        assert_eq!(
            (failed.state, failed.error_code.as_deref()),
            (DeliveryState::Failed, Some("30003"))
        );
        assert_eq!(r("receiving", ""), None);
        assert_eq!(receipt("tw", &p(&[("MessageStatus", "delivered")])), None);
    }

    #[test]
    fn config_names_the_route() {
        assert!(check_config("https://v.example/v1/receipts/tw/status", "tw", false).is_ok());
        assert!(check_config("https://v.example/v1/receipts/other/status", "tw", false).is_err());
        assert!(check_config("https://v.example/hooks", "tw", false).is_err());
        assert!(check_config("https://v.example/v1/receipts/tw/status", "tw", true).is_err());
        assert!(check_config("ftp://v.example/v1/receipts/tw/x", "tw", false).is_err());
    }
}
