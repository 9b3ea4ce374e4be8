//! Standard Webhooks signing, shared by the `hook` provider and the event webhooks: `v1,` and the
//! base64 of HMAC-SHA256 over `id.timestamp.body`, keyed with the bytes inside the `whsec_`
//! secret.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// The signing key inside a `whsec_` secret; `None` unless it holds 24 to 64 bytes of base64,
/// the range the specification asks for.
pub fn key_bytes(secret: &Secret) -> Option<Vec<u8>> {
    let b64 = secret.expose().strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

/// What a bad secret is told, for every setting that holds one.
pub const SECRET_SHAPE: &str = "must be \"whsec_\" followed by the base64 of 24 to 64 random bytes";

/// The `webhook-signature` header value.
pub fn signature(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' test suites: this secret, id,
    /// timestamp and payload sign to this value.
    #[test]
    fn matches_the_specification_example() {
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
