//! The API description (`GET /openapi.json`, `verifyd openapi`), generated from the code: each
//! handler carries its operation (`#[utoipa::path]`), request bodies are the types the handlers
//! deserialize (`ToSchema`), and `shared` holds what many operations have in common. The list of
//! operations is the router's own (`router::operations`): a route and its description are one
//! declaration.

pub(in crate::http) mod seed;
pub(in crate::http) mod shared;

use serde_json::{Map, Value, json};
use std::sync::LazyLock;
use utoipa::OpenApi;

/// The command that rewrites the committed `openapi.json`.
pub const REGENERATE: &str = "cargo run -- openapi --output openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "verifyd",
        description = include_str!("intro.md"),
        license(name = "MIT", identifier = "MIT"),
    ),
    servers((url = "http://127.0.0.1:8080", description = "`cargo run` with the shipped development config.toml")),
    tags(
        (name = "verifications", description = "Send and check codes (browsers and backends)."),
        (name = "sessions", description = "Django's session operations over HTTP (backends, API key required)."),
        (name = "seed compatibility", description = "The seed application's `/sms_send/` and `/sms_check/`, when `compat.seed_routes` is on."),
        (name = "health", description = "Liveness, readiness and this document."),
        (name = "delivery", description = "Delivery receipts: what happened to each code after the gateway accepted it."),
    ),
)]
struct ApiDoc;

/// The document as served and committed, built once.
pub fn document() -> &'static str {
    static DOC: LazyLock<String> = LazyLock::new(|| {
        let mut api = ApiDoc::openapi();
        // The operations come from the route table, where each handler is declared once.
        api.merge(super::router::operations());
        let mut doc = serde_json::to_value(api).expect("the description is JSON");
        complete(&mut doc);
        let mut text = serde_json::to_string_pretty(&doc).expect("the description is JSON");
        text.push('\n');
        text
    });
    &DOC
}

/// The seed's clients call its routes with and without the trailing slash, and the router serves
/// both alike: each operation on these paths is copied to the path without the slash, with its
/// `operationId` less the `Slash`.
const SLASH_TWINS: [&str; 2] = ["/sms_send/", "/sms_check/"];

/// Every response carries these (the `stack` layers add them).
const ON_EVERY_ANSWER: [&str; 3] = ["X-Request-Id", "Cache-Control", "X-Content-Type-Options"];

/// What the annotations leave to one place: the shared components, the header and parameter
/// every operation has, the 413 every route can answer, and references in place of the bare
/// names handlers write for shared parameters and headers.
fn complete(doc: &mut Value) {
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    doc["info"]["summary"] = json!(format!("{}.", env!("CARGO_PKG_DESCRIPTION")));
    let intro = doc["info"]["description"]
        .as_str()
        .unwrap_or_default()
        .trim_end();
    doc["info"]["description"] = json!(intro);
    let shared_params = shared::parameters();
    let shared_headers: Vec<&str> = shared::headers().iter().map(|(n, _)| *n).collect();
    let paths = doc["paths"].as_object_mut().expect("paths");
    *paths = std::mem::take(paths)
        .into_iter()
        .flat_map(|(path, item)| {
            let twin = SLASH_TWINS
                .contains(&path.as_str())
                .then(|| (path.trim_end_matches('/').to_owned(), without_slash(&item)));
            std::iter::once((path, item)).chain(twin)
        })
        .collect();
    for item in paths.values_mut() {
        for op in item.as_object_mut().expect("path item").values_mut() {
            complete_operation(op, &shared_params, &shared_headers);
        }
    }
    let components = doc["components"].as_object_mut().expect("components");
    let table = |entries: Vec<(&str, Value)>| {
        Value::Object(
            entries
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v))
                .collect::<Map<_, _>>(),
        )
    };
    // The request schemas derived from the handlers' types come first, in their own order.
    let schemas = components
        .entry("schemas")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("schemas");
    for (name, schema) in shared::schemas() {
        schemas.insert(name.to_owned(), schema);
    }
    components.insert("parameters".into(), table(shared_params));
    components.insert("headers".into(), table(shared::headers()));
    components.insert("responses".into(), table(shared::responses()));
    components.insert("securitySchemes".into(), table(shared::security_schemes()));
}

fn complete_operation(op: &mut Value, shared_params: &[(&str, Value)], shared_headers: &[&str]) {
    let params = op
        .as_object_mut()
        .expect("operation")
        .entry("parameters")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .expect("parameters");
    for p in params.iter_mut() {
        if p.get("description").is_some() {
            continue;
        }
        let found = shared_params
            .iter()
            .find(|(_, s)| s["name"] == p["name"] && s["in"] == p["in"]);
        if let Some((name, _)) = found {
            *p = reference("parameters", name);
        }
    }
    params.push(reference("parameters", "X-Request-Id"));
    // utoipa writes an optional body (`content = Option<T>`) as "`T` or null"; what is optional
    // is the body, which a form body cannot be null anyway.
    if let Some(body) = op.get_mut("requestBody").and_then(Value::as_object_mut) {
        for media in body
            .get_mut("content")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|c| c.values_mut())
        {
            let schema = &mut media["schema"];
            if let Some([null, inner]) = schema["oneOf"].as_array().map(Vec::as_slice)
                && null == &json!({ "type": "null" })
            {
                *schema = inner.clone();
            }
        }
    }
    let responses = op["responses"].as_object_mut().expect("responses");
    for resp in responses.values_mut() {
        if resp.get("$ref").is_none() {
            complete_response(resp, shared_headers);
        }
    }
    responses
        .entry("413")
        .or_insert_with(|| reference("responses", "BodyTooLarge"));
}

fn complete_response(resp: &mut Value, shared_headers: &[&str]) {
    let resp = resp.as_object_mut().expect("response");
    let given = resp
        .remove("headers")
        .and_then(|h| h.as_object().cloned())
        .unwrap_or_default();
    let mut headers: Map<String, Value> = ON_EVERY_ANSWER
        .iter()
        .map(|h| (h.to_string(), reference("headers", h)))
        .collect();
    for (name, header) in given {
        let bare = header.get("description").is_none();
        let value = if bare && shared_headers.contains(&name.as_str()) {
            reference("headers", &name)
        } else {
            header
        };
        headers.insert(name, value);
    }
    resp.insert("headers".into(), Value::Object(headers));
    // utoipa 5 writes a link's `operationId` as `operation_id`.
    for link in resp
        .get_mut("links")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|l| l.values_mut())
        .filter_map(Value::as_object_mut)
    {
        if let Some(id) = link.remove("operation_id") {
            link.insert("operationId".into(), id);
        }
    }
    // `x-error-codes`: the `error` codes this answer can carry, narrowing the `Error` schema.
    if let Some(codes) = resp.remove("x-error-codes") {
        for media in resp
            .get_mut("content")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|c| c.values_mut())
        {
            media["schema"] = json!({
                "allOf": [{ "$ref": "#/components/schemas/Error" }],
                "properties": { "error": { "enum": codes.clone() } },
            });
        }
    }
}

/// A seed path item for the path without the trailing slash.
fn without_slash(item: &Value) -> Value {
    let mut twin = item.clone();
    for op in twin.as_object_mut().expect("path item").values_mut() {
        let id = op["operationId"].as_str().expect("operationId");
        op["operationId"] = json!(id.strip_suffix("Slash").expect("`…Slash` operationId"));
    }
    twin
}

fn reference(kind: &str, name: &str) -> Value {
    json!({ "$ref": format!("#/components/{kind}/{name}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `$ref` to nothing would pass the JSON checks and break every generator.
    #[test]
    fn every_reference_resolves() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} resolves to nothing");
        }
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| collect_refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
            _ => {}
        }
    }

    /// What the annotations cannot say must not reach the document.
    #[test]
    fn no_annotation_helper_is_left() {
        assert!(!document().contains("x-error-codes"));
    }
}
