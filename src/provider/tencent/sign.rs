//! Tencent Cloud API signature v3 (TC3-HMAC-SHA256), written from Tencent's "Signature v3"
//! documentation. Kept apart from the HTTP code so that the worked example in that
//! documentation pins it byte for byte, and so the test fake and the Python SDK can be held
//! against the same inputs.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The algorithm name that opens both the string to sign and the `Authorization` header.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
/// The headers verifyd signs, in the lowercase, sorted form the canonical request wants.
pub const SIGNED_HEADERS: &str = "content-type;host";

/// What one request signs: everything the server recomputes on its side.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub secret_id: &'a str,
    pub secret_key: &'a str,
    /// The product's short name, the first label of its host (`sms`, `cvm`).
    pub service: &'a str,
    pub host: &'a str,
    pub content_type: &'a str,
    pub payload: &'a [u8],
    /// Unix seconds, sent as `X-TC-Timestamp`; its UTC date scopes the credential.
    pub timestamp: i64,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], msg: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// `YYYY-MM-DD` of a Unix time in UTC (the credential scope's date).
pub fn utc_date(timestamp: i64) -> String {
    let days = timestamp.div_euclid(86_400);
    // Days to civil date (Howard Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Step 1: a POST to `/` with no query string, signing `content-type` and `host`.
pub fn canonical_request(r: &Request<'_>) -> String {
    format!(
        "POST\n/\n\ncontent-type:{}\nhost:{}\n\n{SIGNED_HEADERS}\n{}",
        r.content_type,
        r.host,
        sha256_hex(r.payload)
    )
}

/// Step 2: algorithm, timestamp, credential scope and the hash of the canonical request.
pub fn string_to_sign(r: &Request<'_>) -> String {
    format!(
        "{ALGORITHM}\n{}\n{}/{}/tc3_request\n{}",
        r.timestamp,
        utc_date(r.timestamp),
        r.service,
        sha256_hex(canonical_request(r).as_bytes())
    )
}

/// Step 3: the key is derived from the secret through the date and the service, so a leaked
/// signing key is only good for one service on one day.
pub fn signature(r: &Request<'_>) -> String {
    let date = utc_date(r.timestamp);
    let k_date = hmac(format!("TC3{}", r.secret_key).as_bytes(), &date);
    let k_service = hmac(&k_date, r.service);
    let k_signing = hmac(&k_service, "tc3_request");
    hex::encode(hmac(&k_signing, &string_to_sign(r)))
}

/// Step 4: the `Authorization` header value.
pub fn authorization(r: &Request<'_>) -> String {
    format!(
        "{ALGORITHM} Credential={}/{}/{}/tc3_request, SignedHeaders={SIGNED_HEADERS}, Signature={}",
        r.secret_id,
        utc_date(r.timestamp),
        r.service,
        signature(r)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Tencent's "Signature v3" page: DescribeInstances on CVM with the
    /// documentation's masked credentials, a JSON body with an escaped Chinese instance name,
    /// at 1551113065 (2019-02-25 UTC).
    fn documented() -> Request<'static> {
        Request {
            secret_id: "AKIDz8krbsJ5yKBZQpn74WFkmLPx3*******",
            secret_key: "Gu5t9xGARNpq86cd98joQYCN3*******",
            service: "cvm",
            host: "cvm.tencentcloudapi.com",
            content_type: "application/json; charset=utf-8",
            payload: br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#,
            timestamp: 1_551_113_065,
        }
    }

    #[test]
    fn documented_example_step_by_step() {
        let r = documented();
        assert_eq!(
            canonical_request(&r),
            "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\n\
             content-type;host\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        assert_eq!(
            string_to_sign(&r),
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n\
             5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
        assert_eq!(
            signature(&r),
            "2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c"
        );
        assert_eq!(
            authorization(&r),
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3*******/2019-02-25/cvm/tc3_request, \
             SignedHeaders=content-type;host, \
             Signature=2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c"
        );
    }

    #[test]
    fn every_input_is_signed() {
        let base = signature(&documented());
        let changed = [
            Request {
                secret_key: "other",
                ..documented()
            },
            Request {
                service: "sms",
                ..documented()
            },
            Request {
                host: "sms.tencentcloudapi.com",
                ..documented()
            },
            Request {
                content_type: "application/json",
                ..documented()
            },
            Request {
                payload: b"{}",
                ..documented()
            },
            Request {
                timestamp: 1_551_113_066,
                ..documented()
            },
        ];
        for r in changed {
            assert_ne!(signature(&r), base, "{r:?}");
        }
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_551_113_065), "2019-02-25");
        // 2019-02-26 00:44:25 in Beijing is still the 25th in UTC.
        assert_eq!(utc_date(1_551_139_199), "2019-02-25");
        assert_eq!(utc_date(1_551_139_200), "2019-02-26");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(4_102_444_800), "2100-01-01");
    }
}
