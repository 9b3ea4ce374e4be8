//! Building responses: JSON bodies with their content type.

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

pub type Resp = axum::response::Response;

/// A JSON response with the given status.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Resp {
    let bytes = serde_json::to_vec(body).expect("serializing a JSON value cannot fail");
    raw_json(status, bytes)
}

/// A response whose JSON body is already encoded (the seed's byte-exact answers).
pub fn raw_json(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut resp = Resp::new(Body::from(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
