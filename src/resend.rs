//! Which code a send delivers: with `verification.resend = "same_code"` the live code again
//! (re-derived from its stored nonce, its life extended but capped), otherwise a new one. Kept
//! apart from `verify` because of the two steps around the store's send transaction.

use std::time::Duration;

use crate::code::{Code, CodeKey, CodeMac, CodeNonce};
use crate::config::{ResendMode, VerificationConfig};
use crate::phone::PhoneNumber;
use crate::store::{StoreError, StoreResult, VerificationStore};

/// What drawing and binding codes needs: where live codes are kept, the key codes derive from,
/// and the code settings.
#[derive(Clone, Copy)]
pub struct Codes<'a> {
    pub store: &'a dyn VerificationStore,
    pub key: &'a CodeKey,
    pub settings: &'a VerificationConfig,
}

/// A resend keeps the code only if it stays valid this long at least, so that the send and
/// the store's transaction cannot straddle its expiry.
const MARGIN: Duration = Duration::from_secs(2);

/// The code a send is about to record and deliver.
#[derive(Debug, Clone)]
pub struct Drawn {
    pub code: Code,
    pub mac: CodeMac,
    nonce: CodeNonce,
    /// Lifetime the store gives the code: `ttl`, or less when the code's cap is nearer.
    pub ttl: Duration,
    /// The live code is being sent again.
    reused: bool,
    /// A test number's fixed code: never bound to a nonce, never re-derived.
    fixed: bool,
}

/// Picks the code for a send to (`session_id`, `phone`): the test number's fixed code; in
/// `same_code` mode the live code of an existing session while it may be resent (see
/// [`crate::store::VerificationStore::live_code`]); else a new code from a fresh nonce.
pub async fn draw(
    codes: Codes<'_>,
    session_id: i64,
    existing_session: bool,
    phone: &PhoneNumber,
    fixed: Option<&Code>,
) -> StoreResult<Drawn> {
    let v = codes.settings;
    let ttl = Duration::from_secs(v.ttl);
    let nonce = CodeNonce::generate();
    if let Some(code) = fixed {
        let mac = codes.key.mac(session_id, phone, code);
        return Ok(Drawn {
            code: code.clone(),
            mac,
            nonce,
            ttl,
            reused: false,
            fixed: true,
        });
    }
    if v.resend == ResendMode::SameCode && existing_session {
        if let Some(live) = codes
            .store
            .live_code(session_id, phone, MARGIN, ttl / 2)
            .await?
        {
            let code = codes
                .key
                .derive(session_id, phone, &live.nonce, v.code_length, v.alphabet);
            let mac = codes.key.mac(session_id, phone, &code);
            let ttl = ttl.min(live.keep_left);
            return Ok(Drawn {
                code,
                mac,
                nonce: live.nonce,
                ttl,
                reused: true,
                fixed: false,
            });
        }
    }
    let code = codes
        .key
        .derive(session_id, phone, &nonce, v.code_length, v.alphabet);
    let mac = codes.key.mac(session_id, phone, &code);
    Ok(Drawn {
        code,
        mac,
        nonce,
        ttl,
        reused: false,
        fixed: false,
    })
}

/// After the store recorded the send (`resend`: it continued a live verification): stores the
/// code's nonce and its lifetime cap for later resends. If the live code was meant to be sent
/// again but the store started a new verification with it (the old one ended in between), the
/// code is replaced by a fresh one first, so that no code ever serves two verifications. Returns
/// what to deliver.
pub async fn bind(
    codes: Codes<'_>,
    session_id: i64,
    phone: &PhoneNumber,
    drawn: Drawn,
    resend: bool,
) -> StoreResult<Drawn> {
    let v = codes.settings;
    if drawn.fixed || v.resend == ResendMode::NewCode {
        return Ok(drawn);
    }
    let cap = Duration::from_secs(v.max_code_lifetime());
    let store = codes.store;
    if !drawn.reused {
        store
            .bind_code(
                session_id,
                phone,
                &drawn.mac,
                &drawn.mac,
                &drawn.nonce,
                Some(cap),
            )
            .await?;
        return Ok(drawn);
    }
    if resend {
        store
            .bind_code(
                session_id,
                phone,
                &drawn.mac,
                &drawn.mac,
                &drawn.nonce,
                None,
            )
            .await?;
        return Ok(drawn);
    }
    let nonce = CodeNonce::generate();
    let code = codes
        .key
        .derive(session_id, phone, &nonce, v.code_length, v.alphabet);
    let mac = codes.key.mac(session_id, phone, &code);
    if !store
        .bind_code(session_id, phone, &drawn.mac, &mac, &nonce, Some(cap))
        .await?
    {
        return Err(StoreError::Internal(
            "the verification changed while its code was being replaced".into(),
        ));
    }
    tracing::info!(phone = %phone, "the resent code's verification had ended; a new code replaces it");
    Ok(Drawn {
        code,
        mac,
        nonce,
        reused: false,
        ..drawn
    })
}
