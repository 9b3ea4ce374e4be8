//! Which code a send delivers: a fresh one drawn before the store's send statement, or, when
//! that statement kept the live code (`verification.resend = "same_code"`), the live code again,
//! derived anew from the nonce the store returned. Kept apart from `verify` because of these two
//! steps around the statement; the decision itself is the store's (one transaction).

use std::time::Duration;

use crate::code::{Code, CodeKey, CodeMac, CodeNonce};
use crate::config::{ResendMode, VerificationConfig};
use crate::phone::PhoneNumber;
use crate::store::KeptCode;

/// A resend keeps the code only if it stays valid this long at least, so that the delivery
/// cannot straddle its expiry.
const MARGIN: Duration = Duration::from_secs(2);

/// The code a send is about to record and deliver.
#[derive(Debug, Clone)]
pub struct Drawn {
    pub code: Code,
    pub mac: CodeMac,
    /// What the code was derived from; `None` for a test number's fixed code (never kept).
    pub nonce: Option<CodeNonce>,
    /// Lifetime the store gives the code: `ttl`, or less when a kept code's cap is nearer.
    pub ttl: Duration,
}

/// A fresh code for `phone` (the test number's fixed code for `fixed`).
pub fn draw(
    key: &CodeKey,
    settings: &VerificationConfig,
    phone: &PhoneNumber,
    fixed: Option<&Code>,
) -> Drawn {
    let ttl = Duration::from_secs(settings.ttl);
    if let Some(code) = fixed {
        return Drawn {
            mac: key.mac(phone, code),
            code: code.clone(),
            nonce: None,
            ttl,
        };
    }
    let nonce = CodeNonce::generate();
    let code = key.derive(phone, &nonce, settings.code_length, settings.alphabet);
    Drawn {
        mac: key.mac(phone, &code),
        code,
        nonce: Some(nonce),
        ttl,
    }
}

/// How long the live code must stay valid for the store to keep it: `None` (never kept) unless
/// the mode is `same_code`.
pub fn keep_margin(settings: &VerificationConfig) -> Option<Duration> {
    (settings.resend == ResendMode::SameCode).then_some(MARGIN)
}

/// The code to deliver after the store recorded the send: the fresh one, or the kept one
/// derived from its stored nonce (the same code the person received before).
pub fn in_force(
    key: &CodeKey,
    settings: &VerificationConfig,
    phone: &PhoneNumber,
    fresh: Drawn,
    kept: Option<KeptCode>,
) -> Drawn {
    match kept {
        None => fresh,
        Some(k) => {
            let code = key.derive(phone, &k.nonce, settings.code_length, settings.alphabet);
            Drawn {
                mac: key.mac(phone, &code),
                code,
                nonce: Some(k.nonce),
                ttl: k.ttl,
            }
        }
    }
}
