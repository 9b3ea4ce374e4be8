//! `Idempotency-Key` on `POST /v1/verifications`: the first request with a key does the work
//! and its answer is kept for 24 h; a retry with the same key and body gets that answer and
//! sends nothing; the same key with another body is 422; a retry while the first is still
//! running waits for its answer. Keys are scoped per session (browsers) or per API key name.
//!
//! A replay repeats the status, the body and `Retry-After` (as the time left until the instant
//! the original pointed at). `Set-Cookie` is never stored — it carries the session key, which
//! the database only holds hashed — so a replay carries the cookie its own request calls for,
//! like any request of that session. A browser without a cookie gets a new session, hence a
//! new key scope: its retry is a new request, not a replay.
//!
//! A request that ends without an answer — the client hung up, or `http.request_timeout` cut
//! it — releases its record (see [`Release`]), so the retry runs instead of waiting 24 h. If the
//! first request's code had already been issued, the retry meets the resend cooldown and sends
//! nothing.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::app::App;
use crate::store::{IdempotencyBegin, IdempotencyStore};

use super::error::ApiError;
use super::response::{Resp, raw_json};

/// How long an answer is kept for replays.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a retry waits for a concurrent first request before answering 409.
const WAIT: Duration = Duration::from_secs(10);

/// The stored name under which `Retry-After` is kept: the Unix second it points at.
const RETRY_AT: &str = "retry-at";

/// The headers of an answer that a replay repeats, as stored.
fn kept_headers(h: &HeaderMap, now: SystemTime) -> Vec<(String, String)> {
    let delay = h
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    delay
        .map(|secs| {
            let at = now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .saturating_add(secs);
            (RETRY_AT.to_owned(), at.to_string())
        })
        .into_iter()
        .collect()
}

/// Puts the kept headers back on a replay at `now`.
fn restore_headers(kept: &[(String, String)], h: &mut HeaderMap, now: SystemTime) {
    for (name, value) in kept {
        if name == RETRY_AT {
            if let Ok(at) = value.parse::<u64>() {
                let at = UNIX_EPOCH + Duration::from_secs(at);
                let left = crate::time::secs_until(at, now).max(1);
                h.insert(header::RETRY_AFTER, HeaderValue::from(left));
            }
        }
    }
}

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
            IdempotencyBegin::Done {
                status,
                body,
                headers,
            } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let mut resp = raw_json(status, body);
                restore_headers(&headers, resp.headers_mut(), SystemTime::now());
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
    let mut release = Release {
        store: app.store.clone(),
        owner: owner.to_owned(),
        key: key.to_owned(),
        armed: true,
    };
    let resp = work.await;
    if resp.status().is_server_error() {
        app.store.idempotency_abandon(owner, key).await?;
        release.armed = false;
        return Ok(resp);
    }
    let (head, full) = resp.into_parts();
    let bytes = full
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let kept = kept_headers(&head.headers, SystemTime::now());
    app.store
        .idempotency_finish(owner, key, head.status.as_u16(), &text, &kept)
        .await?;
    release.armed = false;
    Ok(Resp::from_parts(head, bytes.into()))
}

/// Deletes a started record that got no answer when the request's future is dropped: hyper
/// drops it when the client disconnects, the request timeout drops it when time runs out, and
/// a store error on `idempotency_finish` leaves it too. `Drop` cannot wait, so the delete runs
/// on its own task; `idempotency_abandon` deletes only records without an answer, so a late
/// delete never removes a stored one.
struct Release {
    store: Arc<dyn IdempotencyStore>,
    owner: String,
    key: String,
    armed: bool,
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // No runtime means the process is shutting down; the record then expires with its TTL.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, owner, key) = (
            self.store.clone(),
            std::mem::take(&mut self.owner),
            std::mem::take(&mut self.key),
        );
        runtime.spawn(async move {
            if let Err(e) = store.idempotency_abandon(&owner, &key).await {
                tracing::warn!(error = %e, "could not release an unanswered idempotency record");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request timeout drops the request's future mid-work: the record is released, so
    /// the next request with the key starts instead of finding it in flight.
    #[tokio::test]
    async fn a_request_cut_by_the_timeout_releases_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::default();
        config.store.sqlite.path = dir.path().join("v.db");
        let app = App::build(config, true).await.unwrap();
        let (parts, ()) = http::Request::post("/v1/verifications")
            .body(())
            .unwrap()
            .into_parts();
        let body = Bytes::from_static(br#"{"phone":"+8613800138000"}"#);
        let stuck = once(&app, "s:1", "k1", &parts, &body, std::future::pending());
        assert!(
            tokio::time::timeout(Duration::from_millis(200), stuck)
                .await
                .is_err()
        );
        let fp = {
            let mut h = Sha256::new();
            h.update(b"/v1/verifications");
            h.update([0]);
            h.update(&body);
            <[u8; 32]>::from(h.finalize())
        };
        let mut begun = None;
        for _ in 0..100 {
            match app.store.idempotency_begin("s:1", "k1", &fp, TTL).await {
                Ok(IdempotencyBegin::InFlight) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                other => {
                    begun = Some(other);
                    break;
                }
            }
        }
        assert!(
            matches!(begun, Some(Ok(IdempotencyBegin::Started))),
            "the record was not released"
        );
    }

    #[test]
    fn retry_after_is_replayed_as_the_time_left() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut original = HeaderMap::new();
        original.insert(header::RETRY_AFTER, HeaderValue::from(600));
        original.insert(
            header::SET_COOKIE,
            HeaderValue::from_static("sessionid=secret"),
        );
        let kept = kept_headers(&original, t0);
        assert_eq!(kept, [(RETRY_AT.to_owned(), "1000600".to_owned())]);
        let mut replay = HeaderMap::new();
        restore_headers(&kept, &mut replay, t0 + Duration::from_secs(100));
        assert_eq!(replay[header::RETRY_AFTER], "500");
        assert!(
            replay.get(header::SET_COOKIE).is_none(),
            "cookies are never stored"
        );
        let mut late = HeaderMap::new();
        restore_headers(&kept, &mut late, t0 + Duration::from_secs(9999));
        assert_eq!(late[header::RETRY_AFTER], "1");
        assert!(kept_headers(&HeaderMap::new(), t0).is_empty());
    }
}
