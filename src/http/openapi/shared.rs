//! What many operations of the API description share: the answers' schemas, the common
//! parameters, headers and error answers, and the security schemes. The operations themselves are
//! annotated on their handlers (`#[utoipa::path]`); a handler names a shared piece by its marker
//! type here (`body = doc::Session`, `response = doc::Unauthorized`), and `super::complete` puts
//! the piece itself under `components`.

use serde_json::json;
use utoipa::openapi::{RefOr, Response, schema::Schema};

/// Marker types naming a shared schema, so that handlers can write `body = doc::Session`; the
/// schema is in `schemas()`, which `super::complete` writes under `components.schemas`. A
/// `Json` prefix is dropped from the name: utoipa reads a type named `Value` as "any JSON", so
/// the schema `Value` is written `JsonValue`.
macro_rules! schema_names {
    ($($name:ident),* $(,)?) => {$(
        #[allow(dead_code)] // a name for annotations, never a value
        pub struct $name;
        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                RefOr::Ref(utoipa::openapi::Ref::from_schema_name(stringify!($name)))
            }
        }
        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                stringify!($name).trim_start_matches("Json").into()
            }
        }
    )*};
}

/// Marker types naming a shared answer (`response = doc::Unauthorized`), written under
/// `components.responses` from `responses()`.
macro_rules! response_names {
    ($($name:ident),* $(,)?) => {$(
        #[allow(dead_code)] // a name for annotations, never a value
        pub struct $name;
        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), Response::new("").into())
            }
        }
    )*};
}

schema_names!(
    Error,
    NotReady,
    SessionKey,
    Expiry,
    Session,
    SetExpiry,
    JsonValue,
    Deleted,
    Flushed,
    Phone,
    SendAccepted,
    CheckResult,
    CheckNotFound,
    SeedSendOk,
    SeedError,
    SeedCheckResult,
    Challenge,
    DeliveryState,
    Delivery,
    Health,
    Ready,
    ApiDocument,
    ChallengeRequired,
    CheckMissing,
    SeedSendForm,
    SeedCheckForm,
    OwnSession,
    Receipts,
    ReceiptsAccepted
);
response_names!(
    ForeignOriginBackend,
    ForeignOriginSeed,
    ForeignOriginBrowser,
    InvalidDataName,
    Unauthorized,
    BodyTooLarge,
    SessionDataTooLarge,
    Internal,
    StoreOrTimeout,
    Timeout,
    SessionNotFound,
    JsonBodyErrors415,
    MalformedJson,
    SeedSend200,
    SeedSend415,
    SeedSend422,
    SeedSend429,
    SeedSend500,
    SeedSend502,
    SeedSend503,
    SeedCheck200,
    SeedCheck415,
    SeedSend428,
    SeedRoutesOff
);

/// The answers' schemas, and the request schemas no handler deserializes into a type of its own.
pub(super) fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "Error",
            json!({"type": "object", "description": "Every error answer (except the seed routes' own shapes). Match on `error`, a stable snake_case code; `message` is for humans and may change.", "properties": {"error": {"type": "string", "enum": ["malformed_json", "bad_body", "invalid_query", "invalid_path", "unauthorized", "not_found", "session_not_found", "key_not_found", "method_not_allowed", "body_too_large", "unsupported_media_type", "invalid_field", "invalid_phone", "invalid_code", "resend_too_soon", "too_many_attempts", "provider_rate_limited", "provider_unavailable", "store_unavailable", "timeout", "internal", "no_session", "too_many_sends", "too_many_checks", "budget_exhausted", "destination_blocked", "origin_not_allowed", "idempotency_key_reused", "idempotency_in_progress", "invalid_idempotency_key", "challenge_required", "challenge_invalid", "challenge_unavailable", "version_mismatch"], "description": "* `malformed_json` (400): the body is empty or not JSON\n* `bad_body` (400): the body could not be read\n* `invalid_query` (400): a query parameter (`default`) is malformed\n* `invalid_path` (400): a `{name}` segment is not UTF-8 once percent-decoded\n* `unauthorized` (401): missing or wrong API key, or a `session` field without one\n* `not_found` (404): no such route (or no pending verification)\n* `session_not_found`, `key_not_found` (404): see the session API\n* `method_not_allowed` (405): known route, other method (with `Allow`)\n* `body_too_large` (413): body over `http.max_body_bytes`\n* `unsupported_media_type` (415): wrong `Content-Type` for the body\n* `invalid_field` (422): a field is missing, unknown or of the wrong type\n* `invalid_phone` (422): not a valid phone number\n* `invalid_code` (422): a code that is not 4 to 10 symbols of `verification.alphabet`\n* `resend_too_soon`, `too_many_attempts`, `provider_rate_limited` (429, with `Retry-After`)\n* `provider_unavailable` (502/503): the SMS provider failed; nothing was approved\n* `store_unavailable` (503): the database is unreachable\n* `timeout` (503): the request took longer than `http.request_timeout`\n* `internal` (500): a bug; see the log\n* `too_many_sends` (429) a send quota is used up: per number (`per_phone.*`, the hard caps and the per-network ones), per client address or per client network (`per_ip.*`); `Retry-After` says when it frees up\n* `too_many_checks` (429) a check quota is used up: failed checks for this number (`per_phone.max_failed_checks`) or for this number from the client's network (`per_phone.network_max_failed_checks`), then a lock-out; or checks per client address\n* `budget_exhausted` (429) the deployment's hourly SMS budget (`global.max_sends_per_hour`) or the destination country's (`countries.limits`) is spent\n* `destination_blocked` (429) the destination country is refused by `countries.allow`/`countries.deny`, or the SMS-pumping breaker for it is tripped with `pumping.on_trip = \"block\"`\n* `challenge_required` (428) the send needs a solved challenge: `challenge` names where to get one (`/v1/challenge`); no `Retry-After`\n* `origin_not_allowed` (403) a browser request another site made to a state-changing route (by `Sec-Fetch-Site`, else `Origin`, else `Referer`; see the CORS section)\n* `idempotency_key_reused` (422) the `Idempotency-Key` was used before with a different body\n* `idempotency_in_progress` (409) a request with this `Idempotency-Key` is still being processed\n* `invalid_idempotency_key` (400) the `Idempotency-Key` header is empty, too long or not visible ASCII\n* `challenge_invalid` (422): the send carried a challenge solution that is forged, wrong, expired, already used, solved on another site, or meant for another kind of challenge; nothing was sent. Fetch a new challenge from `GET /v1/challenge`.\n* `challenge_unavailable` (503, or 502 when the provider refuses the server's own secret): a Turnstile or hCaptcha token could not be checked with the provider's `siteverify`; nothing was sent.\n* `version_mismatch` (412) `If-Match` names no current ETag of the session (a concurrent writer changed it, or the value is malformed)"}, "message": {"type": "string", "description": "Explanation for humans."}, "challenge": {"type": "string", "description": "Only with `challenge_required`: the path that hands out challenges (`/v1/challenge`).", "examples": ["/v1/challenge"]}}, "required": ["error", "message"], "additionalProperties": false, "examples": [{"error": "session_not_found", "message": "no such session (or it expired)"}]}),
        ),
        (
            "NotReady",
            json!({"type": "object", "properties": {"status": {"const": "not_ready"}, "store": {"const": "unavailable"}, "error": {"enum": ["store_unavailable", "timeout"]}, "message": {"type": "string"}, "delivery": {"enum": ["ok", "unavailable"], "description": "`unavailable` when every provider of the `*` route has an open circuit breaker."}, "providers": {"type": "object", "description": "Circuit-breaker state of each configured provider instance.", "additionalProperties": {"enum": ["closed", "open", "half_open"]}}}, "required": ["error", "message"], "additionalProperties": false}),
        ),
        (
            "SessionKey",
            json!({"type": "string", "pattern": "^[a-z0-9]{32}$", "description": "A session key: 32 characters of `[a-z0-9]`. The secret a browser holds in its `sessionid` cookie.", "examples": ["q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5"]}),
        ),
        (
            "Expiry",
            json!({"description": "How a session expires: `N` > 0 seconds of inactivity (sliding); `0` a browser-session cookie (no `Max-Age`; the server still expires it after `session.default_age` of inactivity); `null` never (bounded only by `session.max_lifetime`); `\"default\"` the global policy, `session.default_age` (two weeks by default). Write `N` as a plain JSON integer: `300.0` and `3e2` are refused with 422 even though JSON Schema counts them as integers. `{\"at\": \"<RFC 3339 date-time>\"}` an absolute moment (Django's `set_expiry(<datetime>)`): the session dies then, however it is used; a moment in the past means dead at once (the answer carries `max_age` 0 and an expiring `Set-Cookie`). The offset is required; fractions finer than a millisecond are cut.", "oneOf": [{"type": "integer", "minimum": 0, "maximum": 2147483647}, {"type": "null"}, {"title": "DefaultExpiry", "type": "string", "enum": ["default"]}, {"title": "ExpiryAt", "type": "object", "required": ["at"], "additionalProperties": false, "properties": {"at": {"type": "string", "format": "date-time"}}}], "examples": [300, 0, null, "default", {"at": "2026-12-24T18:00:00Z"}]}),
        ),
        (
            "Session",
            json!({"type": "object", "description": "A session as the backend sees it.", "properties": {"key": {"$ref": "#/components/schemas/SessionKey"}, "data": {"type": "object", "description": "The session's values, name → any JSON.", "additionalProperties": true}, "expiry": {"$ref": "#/components/schemas/Expiry"}, "created_at": {"type": "string", "format": "date-time", "description": "Creation time, RFC 3339 in whole seconds, UTC (`2026-11-26T04:00:00Z`)."}, "expires_at": {"type": ["string", "null"], "format": "date-time", "description": "When the session expires unless used again; `null` for a session that never expires."}, "max_age": {"type": ["integer", "null"], "minimum": 0, "description": "Seconds until `expires_at` (at most 400 days; 400 days for sessions that never expire), as in the cookie's `Max-Age`; `null` for a browser-session cookie (`expiry` 0)."}, "set_cookie": {"type": "string", "description": "A ready `Set-Cookie` value for the session's cookie, to forward to the browser. Its `Max-Age` agrees with `expires_at`."}}, "required": ["key", "data", "expiry", "created_at", "expires_at", "max_age", "set_cookie"], "additionalProperties": false, "examples": [{"key": "q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5", "data": {"cart": {"items": 3}}, "expiry": "default", "created_at": "2026-11-26T04:00:00Z", "expires_at": "2026-12-10T04:00:00Z", "max_age": 1209600, "set_cookie": "sessionid=q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5; Max-Age=1209600; Path=/; HttpOnly; SameSite=Lax; Secure"}]}),
        ),
        (
            "SetExpiry",
            json!({"type": "object", "properties": {"expiry": {"$ref": "#/components/schemas/Expiry"}}, "required": ["expiry"], "additionalProperties": false}),
        ),
        (
            "Value",
            json!({"type": "object", "properties": {"name": {"type": "string"}, "value": {"description": "Any JSON value."}}, "required": ["name", "value"], "additionalProperties": false}),
        ),
        (
            "Deleted",
            json!({"type": "object", "properties": {"name": {"type": "string"}, "deleted": {"const": true}}, "required": ["name", "deleted"], "additionalProperties": false}),
        ),
        (
            "Flushed",
            json!({"type": "object", "properties": {"flushed": {"const": true}, "set_cookie": {"type": "string", "description": "A `Set-Cookie` value that deletes the browser's cookie."}}, "required": ["flushed", "set_cookie"], "additionalProperties": false}),
        ),
        (
            "Phone",
            json!({"type": "string", "description": "A phone number: `+`, the country calling code and the number, validated with libphonenumber's metadata and answered in its canonical E.164 form. Spaces, `-`, `.` and brackets between digits, full-width digits and a national prefix after the calling code (`+86 0 138 0013 8000`) are tolerated and give the same number; letters, extensions and `tel:` URIs are not, nor more than 40 characters besides surrounding whitespace. The number must be valid (otherwise 422 `invalid_phone`) and of a type listed in `verification.number_types` (otherwise 422 `unsupported_number_type`). With `verification.default_region` set, national numbers of that region (`18434288349`) are accepted too — the pattern below is the shape accepted in the default configuration, which has no region; validity is decided by the metadata.", "pattern": "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[+\\uff0b][0-9\\uff10-\\uff19 .()\\u00a0\\u3000\\uff0d-]*[0-9\\uff10-\\uff19][0-9\\uff10-\\uff19 .()\\u00a0\\u3000\\uff0d-]*[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$", "examples": ["+8613800138000", "+12015550123"]}),
        ),
        (
            "SendAccepted",
            json!({"type": "object", "properties": {"status": {"const": "pending"}, "expires_in": {"type": "integer", "minimum": 0, "description": "Seconds the code just sent stays valid: `verification.ttl`, or less when a `same_code` resend sent a code that may not live past `verification.max_code_lifetime`."}, "resend_in": {"type": "integer", "minimum": 0, "description": "Seconds before another code may be sent to this number in this session (`verification.resend_interval`)."}, "id": {"type": "string", "pattern": "^dlv_[0-9a-f]{32}$", "description": "Backends only, when the gateway gave a message id: the send's id for `GET /v1/verifications/{id}`."}}, "required": ["status", "expires_in", "resend_in"], "additionalProperties": false}),
        ),
        (
            "CheckResult",
            json!({"oneOf": [{"title": "Approved", "type": "object", "properties": {"status": {"const": "approved"}, "verified_phone": {"type": "string", "description": "The number, in E.164."}, "session": {"allOf": [{"$ref": "#/components/schemas/SessionKey"}], "description": "Backends only: the session's new key (the old one is dead)."}}, "required": ["status", "verified_phone"], "additionalProperties": false}, {"title": "Pending", "type": "object", "properties": {"status": {"const": "pending"}, "attempts_left": {"type": "integer", "minimum": 0, "description": "Wrong codes still allowed before this code dies."}}, "required": ["status", "attempts_left"], "additionalProperties": false}, {"title": "Expired", "type": "object", "properties": {"status": {"const": "expired"}}, "required": ["status"], "additionalProperties": false}, {"title": "MaxAttemptsReached", "type": "object", "properties": {"status": {"const": "max_attempts_reached"}}, "required": ["status"], "additionalProperties": false}]}),
        ),
        (
            "CheckNotFound",
            json!({"type": "object", "properties": {"status": {"const": "not_found"}, "error": {"const": "not_found"}, "message": {"type": "string"}}, "required": ["status", "error", "message"], "additionalProperties": false}),
        ),
        (
            "SeedSendOk",
            json!({"type": "object", "properties": {"Code": {"const": "OK"}, "Message": {"const": "OK"}}, "required": ["Code", "Message"], "additionalProperties": false}),
        ),
        (
            "SeedError",
            json!({"type": "object", "description": "The seed application's error shape: `Code` is one of the stable error codes of `Error`.", "properties": {"Code": {"type": "string"}, "Message": {"type": "string"}}, "required": ["Code", "Message"], "additionalProperties": false}),
        ),
        (
            "SeedCheckResult",
            json!({"type": "object", "description": "Byte-exact: `{\"result\": \"OK\"}` or `{\"result\": \"False\"}`.", "properties": {"result": {"enum": ["OK", "False"]}}, "required": ["result"], "additionalProperties": false}),
        ),
        (
            "Challenge",
            json!({"type": "object", "description": "What a page needs to solve the configured challenge. For `altcha` (the default) these are the fields the ALTCHA widget reads from its `challengeurl` (`algorithm`, `challenge`, `maxnumber`, `salt`, `signature`), so the widget can point at this route; the salt carries the challenge's expiry (`?expires=<unix seconds>&`). The solution is the widget's payload: base64 of `{\"algorithm\",\"challenge\",\"number\",\"salt\",\"signature\"}`. For `turnstile` and `hcaptcha` it is the site key to render their widget with.", "properties": {"kind": {"type": "string", "enum": ["altcha", "turnstile", "hcaptcha"], "description": "`challenge.kind`."}, "field": {"type": "string", "enum": ["altcha", "cf-turnstile-response", "h-captcha-response"], "description": "The send-body field that carries the solution."}, "algorithm": {"type": "string", "enum": ["SHA-256"], "description": "ALTCHA only."}, "challenge": {"type": "string", "description": "ALTCHA only: hex SHA-256 of `salt` followed by the secret number in decimal."}, "maxnumber": {"type": "integer", "minimum": 1000, "description": "ALTCHA only: the secret number is at most this (`challenge.altcha.max_number`)."}, "salt": {"type": "string", "description": "ALTCHA only: random hex, then `?expires=<unix seconds>&`."}, "signature": {"type": "string", "description": "ALTCHA only: hex HMAC-SHA256 of `challenge` under the server's key."}, "site_key": {"type": "string", "description": "Turnstile/hCaptcha only: `challenge.site_key`."}}, "required": ["kind", "field"], "additionalProperties": false}),
        ),
        (
            "DeliveryState",
            json!({"type": "string", "enum": ["queued", "sent", "delivered", "failed"], "description": "`queued` (the gateway accepted it) → `sent` (handed to the carrier) → `delivered` | `failed` (final). Receipts only move it forward; the first final receipt wins."}),
        ),
        (
            "Delivery",
            json!({"type": "object", "properties": {"id": {"type": "string", "pattern": "^dlv_[0-9a-f]{32}$"}, "provider": {"type": "string", "description": "The provider instance that accepted the message."}, "message_id": {"type": "string", "description": "The gateway's id: Aliyun `BizId`, Tencent `SerialNo`, SNS `MessageId`."}, "country": {"type": "string", "description": "Calling code of the destination, e.g. `+86`."}, "delivery": {"type": "object", "properties": {"state": {"$ref": "#/components/schemas/DeliveryState"}, "error_code": {"type": ["string", "null"], "description": "The gateway's status code from the receipt that set the state (e.g. `DELIVERED`, `DELIVRD`, `MK:0001`)."}, "queued_at": {"type": "string", "format": "date-time"}, "sent_at": {"type": ["string", "null"], "format": "date-time"}, "final_at": {"type": ["string", "null"], "format": "date-time", "description": "When the final receipt arrived (verifyd's clock)."}}, "required": ["state", "error_code", "queued_at", "sent_at", "final_at"], "additionalProperties": false}}, "required": ["id", "provider", "message_id", "country", "delivery"], "additionalProperties": false}),
        ),
        (
            "Health",
            json!({"type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"], "additionalProperties": false}),
        ),
        (
            "Ready",
            json!({"type": "object", "properties": {"status": {"const": "ready"}, "store": {"const": "ok"}, "delivery": {"enum": ["ok", "unavailable"], "description": "`unavailable` when every provider of the `*` route has an open circuit breaker."}, "providers": {"type": "object", "description": "Circuit-breaker state of each configured provider instance.", "additionalProperties": {"enum": ["closed", "open", "half_open"]}}}, "required": ["status", "store", "delivery", "providers"], "additionalProperties": false}),
        ),
        (
            "ApiDocument",
            json!({"type": "object", "required": ["openapi", "info", "paths"]}),
        ),
        (
            "ChallengeRequired",
            json!({"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["challenge_required"]}}, "required": ["challenge"]}),
        ),
        (
            "CheckMissing",
            json!({"oneOf": [{"$ref": "#/components/schemas/CheckNotFound"}, {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["session_not_found"]}}}]}),
        ),
        (
            "SeedSendForm",
            json!({"type": "object", "properties": {"phone": {"type": "string", "description": "The phone number, read only when the query string has none (then it must be valid, as `Phone`). One of the query string and the body must carry it, otherwise 422 `invalid_phone`."}, "altcha": {"type": "string", "description": "A solved ALTCHA challenge, as in `POST /v1/verifications` (likewise `cf-turnstile-response`, `h-captcha-response`)."}}, "additionalProperties": {"type": "string"}}),
        ),
        (
            "SeedCheckForm",
            json!({"type": "object", "properties": {"phone": {"type": "string"}, "code": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
        ),
        (
            "OwnSession",
            json!({"type": "object", "properties": {"verified_phone": {"type": ["string", "null"], "description": "E.164 number verified in this session."}, "verified_at": {"type": ["string", "null"], "description": "RFC 3339 time of the approval."}}, "required": ["verified_phone", "verified_at"], "additionalProperties": false}),
        ),
        (
            "Receipts",
            json!({"type": "array", "maxItems": 1000, "items": {"type": "object"}}),
        ),
        ("ReceiptsAccepted", json!({"type": "object"})),
    ]
}

/// Parameters that several operations take; `super::complete` turns a handler's bare `("key" = String, Path)` into a reference to the one here with that name and place.
pub(super) fn parameters() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "SessionKey",
            json!({"name": "key", "in": "path", "required": true, "description": "The session key: 32 characters of `[a-z0-9]`. A key of any other shape names no session and is answered **404 `session_not_found`**, exactly like an unknown or expired key — never 400.", "schema": {"$ref": "#/components/schemas/SessionKey"}, "examples": {"key": {"value": "q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5"}}}),
        ),
        (
            "DataName",
            json!({"name": "name", "in": "path", "required": true, "description": "The value's name, percent-decoded (it may contain any character but U+0000, `/` as `%2F`): 1 to 256 characters and no U+0000 (NUL); the same rule on every route and both stores (otherwise 422 `invalid_field`).", "schema": {"type": "string", "minLength": 1, "maxLength": 256}, "examples": {"cart": {"value": "cart"}}}),
        ),
        (
            "Default",
            json!({"name": "default", "in": "query", "required": false, "description": "JSON text returned as `value` when the session has no such name (Django's `session.get(name, default)`), e.g. `[]` (`%5B%5D` in the URL). Text that is not JSON is 400 `invalid_query`.", "schema": {"type": "string", "contentMediaType": "application/json"}, "examples": {"empty_list": {"value": "[]"}, "zero": {"value": "0"}}}),
        ),
        (
            "X-Request-Id",
            json!({"name": "X-Request-Id", "in": "header", "required": false, "description": "A request id to correlate logs. Echoed in the response when it is 1 to 128 printable ASCII characters without spaces; otherwise (or when absent) the server makes one up.", "schema": {"type": "string"}, "examples": {"id": {"value": "req-7f3a9c"}}}),
        ),
        (
            "Accept-Language",
            json!({"name": "Accept-Language", "in": "header", "required": false, "description": "Without `locale` in the body, the first of these languages (by q-value; `q=0`, `*` and malformed entries ignored; only the first 1024 characters and 16 ranges read) that a locale template serves chooses the message text.", "schema": {"type": "string"}, "examples": {"chinese": {"value": "zh-CN,zh;q=0.9,en;q=0.8"}}}),
        ),
    ]
}

/// Response headers; `super::complete` turns a handler's bare `headers(("Set-Cookie"))` into a reference to the one here.
pub(super) fn headers() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "X-Request-Id",
            json!({"description": "The request's id: the `X-Request-Id` the client sent when usable, otherwise 16 hex digits made up by the server. Also in the daemon's log line for the request.", "required": true, "schema": {"type": "string"}}),
        ),
        (
            "Cache-Control",
            json!({"description": "Always `no-store`.", "required": true, "schema": {"const": "no-store"}}),
        ),
        (
            "X-Content-Type-Options",
            json!({"description": "Always `nosniff`.", "required": true, "schema": {"const": "nosniff"}}),
        ),
        (
            "WWW-Authenticate",
            json!({"description": "`Bearer`.", "required": true, "schema": {"const": "Bearer"}}),
        ),
        (
            "Retry-After",
            json!({"description": "Seconds to wait before retrying (at least 1).", "required": true, "schema": {"type": "integer", "minimum": 1}}),
        ),
        (
            "Set-Cookie",
            json!({"description": "Browsers only: the session cookie (`sessionid=<key>; Max-Age=…; Path=/; HttpOnly; SameSite=Lax[; Secure]`), sent when a session was created, its key cycled or its expiry moved.", "required": false, "schema": {"type": "string"}}),
        ),
        (
            "Idempotent-Replayed",
            json!({"description": "`true` when this answer is a replay of an earlier request with the same `Idempotency-Key` (nothing was sent this time). A replay repeats the status, the body and, for a 429, `Retry-After` (the seconds left until the instant the first answer named, at least 1). `Set-Cookie` is never replayed: the replay carries the cookie its own request calls for.", "required": false, "schema": {"const": "true"}}),
        ),
    ]
}

/// Answers that several operations give alike.
pub(super) fn responses() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "ForeignOriginBackend",
            json!({"description": "Without an API key: a browser request made by another site (`origin_not_allowed`), judged as on the verification routes; with an API key this never happens.", "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["origin_not_allowed"]}}}}}, "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}}),
        ),
        (
            "ForeignOriginSeed",
            json!({"description": "A browser request made by another site (`origin_not_allowed`): `Sec-Fetch-Site: cross-site`, `same-site` without an `Origin` in `http.cors.allowed_origins`, or, from browsers without `Sec-Fetch-Site`, an `Origin` (else `Referer`) that is neither this host nor allowed. Whatever the method (these routes change state on `GET` too). Requests with none of these headers, and backend calls with an API key, are not affected. The answer has the standard error shape, not the seed's.", "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["origin_not_allowed"]}}}}}, "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}}),
        ),
        (
            "ForeignOriginBrowser",
            json!({"description": "A browser request made by another site (`origin_not_allowed`): `Sec-Fetch-Site: cross-site`, `same-site` without an `Origin` in `http.cors.allowed_origins`, or, from browsers without `Sec-Fetch-Site`, an `Origin` (else `Referer`) that is neither this host nor allowed. Requests with none of these headers, and backend calls with an API key, are not affected.", "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["origin_not_allowed"]}}}}}, "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}}),
        ),
        (
            "InvalidDataName",
            json!({"description": "The name breaks the name rule: empty, longer than 256 characters, or holding U+0000 (no session can hold such a name).", "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["invalid_field"]}}}, "examples": {"invalid_field": {"value": {"error": "invalid_field", "message": "data names are 1 to 256 characters"}}}}}, "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}}),
        ),
        (
            "Unauthorized",
            json!({"description": "No valid API key: the `Authorization` header is missing, is not `Bearer <key>`, or names an unknown key.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}, "WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["unauthorized"]}}}, "examples": {"unauthorized": {"value": {"error": "unauthorized", "message": "a valid API key is required: Authorization: Bearer <key>"}}}}}}),
        ),
        (
            "BodyTooLarge",
            json!({"description": "The request body is larger than `http.max_body_bytes` (16384 bytes by default). Every route checks this, whatever its method, before anything else but routing.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["body_too_large"]}}}, "examples": {"body_too_large": {"value": {"error": "body_too_large", "message": "request bodies are limited to 16384 bytes"}}}}}}),
        ),
        (
            "SessionDataTooLarge",
            json!({"description": "The request body is larger than `http.max_body_bytes` (`body_too_large`), or the write would take the session's data past `session.max_data_bytes` (65536 bytes of compact JSON by default; `session_data_too_large`). Nothing was written.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["body_too_large", "session_data_too_large"]}}}, "examples": {"body_too_large": {"value": {"error": "body_too_large", "message": "request bodies are limited to 16384 bytes"}}, "session_data_too_large": {"value": {"error": "session_data_too_large", "message": "a session's data is limited to 65536 bytes of JSON; nothing was written"}}}}}}),
        ),
        (
            "Internal",
            json!({"description": "An unexpected internal error (a bug or a store fault); details are in the daemon's log.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["internal"]}}}, "examples": {"internal": {"value": {"error": "internal", "message": "internal error"}}}}}}),
        ),
        (
            "StoreOrTimeout",
            json!({"description": "The session store is unreachable (`store_unavailable`, retry shortly) or the request took longer than `http.request_timeout` (`timeout`).", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["store_unavailable", "timeout"]}}}, "examples": {"store_unavailable": {"value": {"error": "store_unavailable", "message": "the session store is unavailable; retry shortly"}}, "timeout": {"value": {"error": "timeout", "message": "the request took too long"}}}}}}),
        ),
        (
            "Timeout",
            json!({"description": "The request took longer than `http.request_timeout` seconds.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["timeout"]}}}, "examples": {"timeout": {"value": {"error": "timeout", "message": "the request took too long"}}}}}}),
        ),
        (
            "SessionNotFound",
            json!({"description": "No live session has this key. Unknown, expired, flushed, cycled-away and malformed keys all get this same answer: a key that does not match `^[a-z0-9]{32}$` is **404, never 400**.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["session_not_found"]}}}, "examples": {"session_not_found": {"value": {"error": "session_not_found", "message": "no such session (or it expired)"}}}}}}),
        ),
        (
            "JsonBodyErrors415",
            json!({"description": "A body was sent with a `Content-Type` other than `application/json` (or `…+json`).", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["unsupported_media_type"]}}}, "examples": {"unsupported_media_type": {"value": {"error": "unsupported_media_type", "message": "send the body as Content-Type: application/json"}}}}}}),
        ),
        (
            "MalformedJson",
            json!({"description": "The body is empty or is not well-formed JSON.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["malformed_json"]}}}, "examples": {"malformed_json": {"value": {"error": "malformed_json", "message": "malformed JSON: EOF while parsing an object at line 1 column 1"}}}}}}),
        ),
        (
            "SeedSend200",
            json!({"description": "The code is on its way.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}, "Set-Cookie": {"$ref": "#/components/headers/Set-Cookie"}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SeedSendOk"}, "examples": {"ok": {"value": {"Code": "OK", "Message": "OK"}}}}}}),
        ),
        (
            "SeedSend415",
            json!({"description": "A non-empty body was sent with a `Content-Type` other than `application/x-www-form-urlencoded`.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/SeedError"}], "properties": {"Code": {"enum": ["unsupported_media_type"]}}}}}}),
        ),
        (
            "SeedSend422",
            json!({"description": "`phone` is missing or invalid, or the provider cannot deliver to it (`invalid_phone`); of a type not in `verification.number_types` (`unsupported_number_type`); a bad challenge solution (`challenge_invalid`, which re-sends the cookie when the browser's session expiry moved).", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}, "Set-Cookie": {"$ref": "#/components/headers/Set-Cookie"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/SeedError"}], "properties": {"Code": {"enum": ["invalid_phone", "unsupported_number_type", "challenge_invalid"]}}}, "examples": {"invalid_phone": {"value": {"Code": "invalid_phone", "Message": "phone number is not a valid number"}}, "unsupported_number_type": {"value": {"Code": "unsupported_number_type", "Message": "premium_rate numbers are not accepted"}}}}}}),
        ),
        (
            "SeedSend429",
            json!({"description": "As for `POST /v1/verifications`: `resend_too_soon`, `too_many_attempts` or `provider_rate_limited`, with `Retry-After`. Abuse limits answer here too: `too_many_sends`, `budget_exhausted`, `destination_blocked` (breaker tripped with `pumping.on_trip = \"block\"`).", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}, "Retry-After": {"$ref": "#/components/headers/Retry-After"}, "Set-Cookie": {"$ref": "#/components/headers/Set-Cookie"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/SeedError"}], "properties": {"Code": {"enum": ["resend_too_soon", "too_many_attempts", "provider_rate_limited", "too_many_sends", "budget_exhausted", "destination_blocked"]}}}, "examples": {"resend_too_soon": {"value": {"Code": "resend_too_soon", "Message": "a code was sent recently; retry in 42 s"}}}}}}),
        ),
        (
            "SeedSend500",
            json!({"description": "An unexpected internal error.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}, "Set-Cookie": {"$ref": "#/components/headers/Set-Cookie"}}, "content": {"application/json": {"schema": {"anyOf": [{"allOf": [{"$ref": "#/components/schemas/SeedError"}], "properties": {"Code": {"enum": ["internal"]}}}, {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["internal"]}}}]}}}}),
        ),
        (
            "SeedSend502",
            json!({"description": "The SMS provider refused the request (misconfigured). Or the CAPTCHA provider refused the server's secret (`challenge_unavailable`).", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}, "Set-Cookie": {"$ref": "#/components/headers/Set-Cookie"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/SeedError"}], "properties": {"Code": {"enum": ["provider_unavailable", "challenge_unavailable"]}}}}}}),
        ),
        (
            "SeedSend503",
            json!({"description": "The SMS provider or the store is unavailable (seed shape), or the request took too long (usual error body, `timeout`). A CAPTCHA token that could not be checked is `challenge_unavailable`.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}, "Set-Cookie": {"$ref": "#/components/headers/Set-Cookie"}}, "content": {"application/json": {"schema": {"anyOf": [{"allOf": [{"$ref": "#/components/schemas/SeedError"}], "properties": {"Code": {"enum": ["provider_unavailable", "store_unavailable", "challenge_unavailable"]}}}, {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["timeout"]}}}]}}}}),
        ),
        (
            "SeedCheck200",
            json!({"description": "`OK` for an approved code, `False` for everything else.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}, "Set-Cookie": {"$ref": "#/components/headers/Set-Cookie"}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SeedCheckResult"}, "examples": {"ok": {"value": {"result": "OK"}}, "false": {"value": {"result": "False"}}}}}}),
        ),
        (
            "SeedCheck415",
            json!({"description": "A non-empty body was sent with a `Content-Type` other than `application/x-www-form-urlencoded`.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["unsupported_media_type"]}}}, "examples": {"unsupported_media_type": {"value": {"error": "unsupported_media_type", "message": "send parameters in the query string or as application/x-www-form-urlencoded"}}}}}}),
        ),
        (
            "SeedSend428",
            json!({"description": "As for `POST /v1/verifications`: the send needs a solved challenge (`challenge_required`); nothing was sent or stored.", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}, "Set-Cookie": {"$ref": "#/components/headers/Set-Cookie"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/SeedError"}], "properties": {"Code": {"enum": ["challenge_required"]}}}, "examples": {"challenge_required": {"value": {"Code": "challenge_required", "Message": "solve a challenge from /v1/challenge and send the request again with its solution"}}}}}}),
        ),
        (
            "SeedRoutesOff",
            json!({"description": "`compat.seed_routes` is off (the default): the route does not exist (`not_found`, the usual error body).", "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, "Cache-Control": {"$ref": "#/components/headers/Cache-Control"}, "X-Content-Type-Options": {"$ref": "#/components/headers/X-Content-Type-Options"}}, "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}], "properties": {"error": {"enum": ["not_found"]}}}}}}),
        ),
    ]
}

/// How callers authenticate: an API key as a bearer token (backends) or the session cookie (browsers).
pub(super) fn security_schemes() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        (
            "bearerAuth",
            json!({"type": "http", "scheme": "bearer", "description": "An API key from `api.keys` (configured as its SHA-256; make one with `verifyd gen-api-key`)."}),
        ),
        (
            "sessionCookie",
            json!({"type": "apiKey", "in": "cookie", "name": "sessionid", "description": "The browser's session cookie (`session.cookie_name`, `sessionid` by default). Unknown, expired or forged values are treated as no cookie."}),
        ),
    ]
}
