//! `GET /v1/challenge` and the challenge check of the send routes: what a page fetches when a
//! send answers `challenge_required`, and what the send then carries back.

use axum::extract::State;
use http::StatusCode;
use http::request::Parts;
use std::sync::Arc;
use std::time::SystemTime;

use crate::app::App;
use crate::challenge::{ChallengeError, Submitted};

use super::error::ApiError;
use super::response::{Resp, json};

/// `GET /v1/challenge`: a fresh ALTCHA challenge (the widget's JSON, plus `kind` and `field`),
/// or the kind and site key of the configured CAPTCHA. Issuing writes nothing anywhere, so
/// fetching many costs the server only a hash and an HMAC each.
pub async fn get(State(app): State<Arc<App>>) -> Resp {
    json(StatusCode::OK, &app.challenges.describe(SystemTime::now()))
}

/// Whether the send carries a valid solution: `Ok(false)` without one, `Ok(true)` with a good
/// one (an ALTCHA challenge is then spent for every daemon), a 4xx/5xx for a bad one or a
/// CAPTCHA provider that cannot be asked. Checked before anything is sent or stored for the
/// send, so a bad solution costs nothing else.
pub async fn passed(
    app: &App,
    parts: &Parts,
    submitted: Submitted<'_>,
    backend: bool,
) -> Result<bool, ApiError> {
    let client = super::client_ip::browser(app, parts, backend);
    let result = app
        .challenges
        .check(app.store.as_ref(), submitted, client, SystemTime::now())
        .await;
    let outcome = match &result {
        Ok(false) => None,
        Ok(true) => Some("passed"),
        Err(ChallengeError::Invalid(why)) => {
            tracing::info!(reason = %why, "challenge solution refused");
            Some("invalid")
        }
        Err(ChallengeError::Unavailable(_) | ChallengeError::Misconfigured(_)) => {
            Some("unavailable")
        }
        Err(ChallengeError::Store(_)) => None,
    };
    if let Some(outcome) = outcome {
        app.metrics.challenge_solution(outcome);
    }
    Ok(result?)
}
