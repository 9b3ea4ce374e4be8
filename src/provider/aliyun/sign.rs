//! Aliyun's RPC signature, version 2 (HMAC-SHA1). Kept apart from the HTTP code so that the two
//! test vectors Alibaba publishes can pin it byte for byte, and so that the method is a parameter:
//! the vectors are GET requests, verifyd sends POST, and the verb is part of what is signed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;

/// Everything but `A-Z a-z 0-9 - _ . ~` is encoded (RFC 3986 unreserved), so a space is `%20`,
/// never `+`, and `*` and `~` come out the way Aliyun's servers compute them.
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Aliyun's percent-encoding of one name or value (UTF-8, uppercase hex).
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, RESERVED).to_string()
}

/// The parameters sorted by name, encoded and joined as `k=v&k=v`.
pub fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> =
        params.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `METHOD&%2F&enc(canonical query)`: the query is encoded a second time.
pub fn string_to_sign(method: &str, canonical_query: &str) -> String {
    format!("{method}&{}&{}", encode("/"), encode(canonical_query))
}

/// `base64(HMAC-SHA1(secret + "&", string to sign))` over every parameter but `Signature`.
pub fn signature(method: &str, params: &[(&str, &str)], secret: &str) -> String {
    let to_sign = string_to_sign(method, &canonical_query(params));
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(to_sign.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The complete request: the canonical query followed by `&Signature=…`, ready to be sent as
/// an `application/x-www-form-urlencoded` body (or a GET query string).
pub fn signed_query(method: &str, params: &[(&str, &str)], secret: &str) -> String {
    format!(
        "{}&Signature={}",
        canonical_query(params),
        encode(&signature(method, params, secret))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alibaba's SMS example (GET), from the dysmsapi signature documentation.
    #[test]
    fn sms_vector() {
        let params = [
            ("AccessKeyId", "testId"),
            ("Action", "SendSms"),
            ("Format", "XML"),
            ("OutId", "123"),
            ("PhoneNumbers", "15300000001"),
            ("RegionId", "cn-hangzhou"),
            ("SignName", "阿里云短信测试专用"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", "SMS_71390007"),
            ("TemplateParam", r#"{"customer":"test"}"#),
            ("Timestamp", "2017-07-12T02:42:19Z"),
            ("Version", "2017-05-25"),
        ];
        assert_eq!(
            signature("GET", &params, "testSecret"),
            "zJDF+Lrzhj/ThnlvIToysFRq6t4="
        );
        // Parameter order must not matter: the signer sorts.
        let mut reversed = params;
        reversed.reverse();
        assert_eq!(
            signature("GET", &reversed, "testSecret"),
            "zJDF+Lrzhj/ThnlvIToysFRq6t4="
        );
        // The verb is signed: the same parameters sent by POST sign differently.
        assert_ne!(
            signature("POST", &params, "testSecret"),
            "zJDF+Lrzhj/ThnlvIToysFRq6t4="
        );
    }

    /// Alibaba's generic RPC example (DescribeRegions, GET).
    #[test]
    fn rpc_vector() {
        let params = [
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ];
        assert_eq!(
            signature("GET", &params, "testsecret"),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
        assert_eq!(
            string_to_sign("GET", &canonical_query(&params)),
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML\
             %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
             %26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z\
             %26Version%3D2014-05-26"
        );
    }

    #[test]
    fn encodes_like_aliyun() {
        assert_eq!(encode("a b*c~d+e/f"), "a%20b%2Ac~d%2Be%2Ff");
        assert_eq!(encode("-_.~AZaz09"), "-_.~AZaz09");
        assert_eq!(encode("短"), "%E7%9F%AD");
    }

    #[test]
    fn signed_query_carries_the_encoded_signature() {
        let q = signed_query("GET", &[("B", "2"), ("A", "1")], "k");
        let sig = signature("GET", &[("A", "1"), ("B", "2")], "k");
        assert_eq!(q, format!("A=1&B=2&Signature={}", encode(&sig)));
    }
}
