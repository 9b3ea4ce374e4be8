//! `POST /v1/receipts/{provider}/{token}`: delivery receipts pushed by the gateways, and
//! `GET /v1/verifications/{id}`: a send's delivery state for backends. A push is accepted only
//! with the instance's secret token (compared in constant time); an unknown instance, an
//! instance without receipts and a wrong token all get the same 404, so the path reveals
//! nothing about which names exist.

use axum::extract::State;
use http::StatusCode;
use http::request::Parts;
use serde_json::json;
use std::sync::Arc;
use std::time::SystemTime;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::delivery::receipts::{self, Auth, ParseError};
use crate::delivery::twilio;
use crate::delivery::{Delivery, DeliveryState, ReceiptOutcome};

use super::caller::require_backend;
use super::error::ApiError;
use super::openapi::shared as doc;
use super::request::{Body, PathParams};
use super::response::{Resp, json};

fn no_endpoint() -> ApiError {
    ApiError::not_found("not_found", "no such receipt endpoint")
}

/// `POST /v1/receipts/{provider}/{token}`. Both segments are taken as sent, not
/// percent-decoded: the token is a secret compared byte for byte, and an encoded spelling of
/// it is another string.
#[utoipa::path(
    post,
    path = "/v1/receipts/{provider}/{token}",
    operation_id = "pushReceipts",
    tag = "delivery",
    summary = "Delivery receipts from a gateway",
    description = "Where a gateway pushes its delivery receipts: `{provider}` is the provider instance name (`aliyun` or `tencent` for the single `[provider]`), `{token}` its `receipt_token`. The body is the gateway's documented push format: Aliyun `SmsReport` (a JSON array of `{biz_id, success, err_code, …}`) or Tencent's status callback (a JSON array of `{sid, report_status, errmsg, …}`). An unknown instance, an instance without receipts and a wrong token are all answered 404. Receipts for unknown ids are counted and dropped; repeats and late receipts change nothing.",
    security(()),
    params(
        ("provider" = String, Path),
        ("token" = String, Path),
    ),
    request_body(
        content = doc::Receipts,
        content_type = "application/json",
        examples(
            ("aliyun" = (value = json!([{"phone_number": "13800138000", "send_time": "2026-11-30 14:00:00", "report_time": "2026-11-30 14:00:04", "success": true, "err_code": "DELIVERED", "err_msg": "用户接收成功", "sms_size": "1", "biz_id": "900619746936498440^0", "out_id": ""}]))),
            ("tencent" = (value = json!([{"user_receive_time": "2026-11-30 14:00:04", "nationcode": "86", "mobile": "13800138000", "report_status": "SUCCESS", "errmsg": "DELIVRD", "description": "用户短信送达成功", "sid": "2433:f825e6b16e23f73f4123"}]))),
        ),
    ),
    responses(
        (
            status = 200,
            description = "Accepted; the acknowledgement the gateway expects (`{\"code\":0,\"msg\":\"成功\"}` for Aliyun, `{\"result\":0,\"errmsg\":\"OK\"}` for Tencent).",
            body = doc::ReceiptsAccepted,
            content_type = "application/json"
        ),
        (
            status = 400,
            description = "The body is not a JSON array of reports in the gateway's format (`invalid_receipts`), or holds more than 1000 (`too_many_receipts`).",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["invalid_receipts", "too_many_receipts", "malformed_json"]))),
            content_type = "application/json"
        ),
        (
            status = 404,
            description = "No such receipt endpoint (unknown instance, no receipts configured, or a wrong token).",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["not_found"]))),
            content_type = "application/json"
        ),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
    )
)]
pub async fn ingest(
    State(app): State<Arc<App>>,
    parts: Parts,
    Body(body): Body,
) -> Result<Resp, ApiError> {
    // axum's path parameters come decoded, so the segments are read off the path itself.
    let mut segments = parts.uri.path().rsplit('/');
    let token = segments.next().unwrap_or_default();
    let provider = segments.next().unwrap_or_default();
    let Some((format, auth)) = app.config.provider_set().receipt_source(provider) else {
        // Compared all the same, so that an unknown name answers in the time a known one does.
        let _ = token.as_bytes().ct_eq(b"-no-endpoint-padding-");
        return Err(no_endpoint());
    };
    let genuine = match auth {
        Auth::Token(secret) => bool::from(token.as_bytes().ct_eq(secret.expose().as_bytes())),
        Auth::Twilio { url, auth_token } => {
            let signature = parts
                .headers
                .get("x-twilio-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let params: Vec<(String, String)> =
                form_urlencoded::parse(&body).into_owned().collect();
            // The signed URL is the configured one; the request must have come to its path.
            let same_path = reqwest::Url::parse(url).is_ok_and(|u| u.path() == parts.uri.path());
            same_path && twilio::verify(auth_token.expose(), url, &params, signature)
        }
    };
    if !genuine {
        tracing::warn!(provider, "receipt push without valid credentials refused");
        return Err(no_endpoint());
    }
    let updates = receipts::parse(format, provider, &body).map_err(|e| match e {
        ParseError::TooMany => ApiError::bad_request("too_many_receipts", e.to_string()),
        ParseError::Shape(_) => ApiError::bad_request("invalid_receipts", e.to_string()),
    })?;
    let m = &app.metrics.delivery;
    for update in updates {
        let Some(update) = update else {
            m.ignored(provider, "unknown");
            continue;
        };
        match app.store.apply_receipt(&update).await? {
            ReceiptOutcome::Applied { delivery } => applied(&app, &delivery),
            ReceiptOutcome::Unknown => {
                m.ignored(provider, "unknown");
                tracing::info!(provider, "receipt for an unknown message id dropped");
            }
            ReceiptOutcome::Duplicate => m.ignored(provider, "duplicate"),
            ReceiptOutcome::Stale => m.ignored(provider, "stale"),
        }
    }
    Ok(json(StatusCode::OK, &format.ack()))
}

/// Counts a receipt that moved a delivery and feeds final ones to the provider's breaker.
fn applied(app: &App, d: &Delivery) {
    let elapsed = match (d.state, d.final_at) {
        (DeliveryState::Delivered, Some(at)) => at.duration_since(d.queued_at).ok(),
        _ => None,
    };
    app.metrics
        .delivery
        .moved(&d.provider, &d.country, d.state.as_str(), elapsed);
    if d.state.is_final() {
        app.provider
            .receipt(&d.provider, d.state == DeliveryState::Failed);
    }
    tracing::info!(provider = %d.provider, state = d.state.as_str(), code = ?d.error_code, "delivery receipt");
}

/// `GET /v1/verifications/{id}` (API key): the delivery of one accepted send.
#[utoipa::path(
    get,
    path = "/v1/verifications/{id}",
    operation_id = "getVerification",
    tag = "delivery",
    summary = "A send's delivery state",
    description = "The delivery record of one accepted send, by the `id` the send answered with (backends only). Its state follows the gateway's delivery receipts.",
    security(("bearerAuth" = [])),
    params(
        ("id" = String, Path, description = "The send's id. Any other shape is answered 404, like an unknown id.", example = json!("dlv_4f9c2b7e0a1d4c8e9b3a6f5d2e1c0b9a")),
    ),
    responses(
        (
            status = 200,
            description = "The delivery.",
            body = doc::Delivery,
            content_type = "application/json",
            examples(
                ("delivered" = (value = json!({"id": "dlv_4f9c2b7e0a1d4c8e9b3a6f5d2e1c0b9a", "provider": "cn", "message_id": "900619746936498440^0", "country": "+86", "delivery": {"state": "delivered", "error_code": "DELIVERED", "queued_at": "2026-11-30T06:00:00Z", "sent_at": null, "final_at": "2026-11-30T06:00:04Z"}}))),
            )
        ),
        (status = 401, response = doc::Unauthorized),
        (
            status = 404,
            description = "No send has this id (or its session is gone).",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["not_found"]))),
            content_type = "application/json"
        ),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
    )
)]
pub async fn get(
    State(app): State<Arc<App>>,
    PathParams(id): PathParams<String>,
    parts: Parts,
) -> Result<Resp, ApiError> {
    require_backend(&app, &parts)?;
    let missing = || ApiError::not_found("not_found", "no such verification send");
    if !crate::delivery::is_id(&id) {
        return Err(missing());
    }
    let d = app.store.delivery(&id).await?.ok_or_else(missing)?;
    let at = |t: Option<SystemTime>| t.map(crate::time::rfc3339);
    Ok(json(
        StatusCode::OK,
        &json!({
            "id": d.id,
            "provider": d.provider,
            "message_id": d.message_id,
            "country": d.country,
            "delivery": {
                "state": d.state.as_str(),
                "error_code": d.error_code,
                "queued_at": crate::time::rfc3339(d.queued_at),
                "sent_at": at(d.sent_at),
                "final_at": at(d.final_at),
            },
        }),
    ))
}
