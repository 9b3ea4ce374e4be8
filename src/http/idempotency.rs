//! `Idempotency-Key` on `POST /v1/verifications`: the first request with a key does the work
//! and its answer is kept for 24 h; a retry with the same key and body gets that answer and
//! sends nothing; the same key with another body is 422; a retry while the first is still
//! running waits for its answer. Keys are scoped per session (browsers) or per API key name.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::store::IdempotencyBegin;

use super::error::ApiError;
use super::response::{Resp, raw_json};

/// How long an answer is kept for replays.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a retry waits for a concurrent first request before answering 409.
const WAIT: Duration = Duration::from_secs(10);

/// The key of the request, if it carries one; 400 when it is not 1 to 255 visible characters.
pub fn key(parts: &Parts) -> Result<Option<String>, ApiError> {
    let Some(v) = parts.headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// Runs `work` once per (owner, key, request); replays its answer otherwise. Answers with a
/// 5xx status are not kept, so that a retry after a failure can succeed.
pub async fn once<F>(
    app: &App,
    owner: &str,
    key: &str,
    parts: &Parts,
    body: &Bytes,
    work: F,
) -> Result<Resp, ApiError>
where
    F: Future<Output = Resp>,
{
    let mut h = Sha256::new();
    h.update(parts.uri.path().as_bytes());
    h.update([0]);
    h.update(body);
    let fingerprint: [u8; 32] = h.finalize().into();
    let started = Instant::now();
    loop {
        match app
            .store
            .idempotency_begin(owner, key, &fingerprint, TTL)
            .await?
        {
            IdempotencyBegin::Started => break,
            IdempotencyBegin::Mismatch => {
                return Err(ApiError::unprocessable(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                ));
            }
            IdempotencyBegin::Done { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let mut resp = raw_json(status, body);
                resp.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Ok(resp);
            }
            IdempotencyBegin::InFlight if started.elapsed() < WAIT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            IdempotencyBegin::InFlight => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_in_progress",
                    "a request with this Idempotency-Key is still running; retry shortly",
                ));
            }
        }
    }
    let resp = work.await;
    if resp.status().is_server_error() {
        app.store.idempotency_abandon(owner, key).await?;
        return Ok(resp);
    }
    let (head, full) = resp.into_parts();
    let bytes = full
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    app.store
        .idempotency_finish(owner, key, head.status.as_u16(), &text)
        .await?;
    Ok(Resp::from_parts(head, bytes.into()))
}
