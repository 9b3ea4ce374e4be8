//! `GET /`: the demo page (with `http.demo_page`), a person's way to try the flow and a worked
//! example of a front end calling the API. It is one file with one inline `<style>` and one
//! inline `<script>`; the Content-Security-Policy allows exactly those two by their SHA-256, and
//! nothing else but calls back to this origin.

use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};
use std::sync::{Arc, LazyLock};

use super::openapi::shared as doc;
use super::response::Resp;
use crate::app::App;
use crate::code::Alphabet;

/// The page, as shipped.
pub const PAGE: &str = include_str!("demo.html");

/// Computed once: hashing the page's inline blocks is cheap but needless per request.
static POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let script = block_hash(PAGE, "script").expect("demo.html has one <script> block");
    let style = block_hash(PAGE, "style").expect("demo.html has one <style> block");
    let policy = format!(
        "default-src 'none'; script-src '{script}'; style-src '{style}'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).expect("a CSP of ASCII hashes is a valid header")
});

/// The code field's keyboard hint as shipped (digits), and the one for letter codes.
const NUMERIC_FIELD: &str = r#"inputmode="numeric""#;
const LETTERS_FIELD: &str = r#"inputmode="text" autocapitalize="characters" spellcheck="false""#;

/// The page for `verification.alphabet = "alphanumeric"`: a phone shows letters for the code.
static LETTERS_PAGE: LazyLock<Bytes> =
    LazyLock::new(|| Bytes::from(PAGE.replacen(NUMERIC_FIELD, LETTERS_FIELD, 1)));

/// `GET /`
#[utoipa::path(
    get,
    path = "/",
    operation_id = "demoPage",
    tag = "health",
    summary = "Demo page",
    description = "With `http.demo_page = true`, a small self-contained HTML page that sends and checks a code through the cookie-bound API. Answers 404 when the page is off.",
    security(),
    responses(
        (
            status = 200,
            description = "The page (inline CSS and script, guarded by a hash-based Content-Security-Policy).",
            body = String,
            content_type = "text/html",
            headers(("Content-Security-Policy" = String, description = "Allows only the page's own inline style and script and connections to this origin."))
        ),
        (
            status = 404,
            description = "The demo page is switched off (`http.demo_page = false`).",
            body = doc::Error,
            content_type = "application/json"
        ),
        (status = 503, response = doc::Timeout),
    )
)]
pub async fn get(State(app): State<Arc<App>>) -> Resp {
    page(app.config.verification.alphabet)
}

/// The page with its security headers, its code field suited to `alphabet`.
fn page(alphabet: Alphabet) -> Resp {
    let body = match alphabet {
        Alphabet::Digits => Bytes::from_static(PAGE.as_bytes()),
        Alphabet::Alphanumeric => LETTERS_PAGE.clone(),
    };
    let mut resp = Resp::new(body.into());
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, POLICY.clone());
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// `'sha256-…'` of the text between `<tag>` and `</tag>`, when the page has exactly one such
/// block: a second inline block would be refused by the browser, so it is refused here first.
fn block_hash(page: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let (_, rest) = page.split_once(&open)?;
    let (body, after) = rest.split_once(&close)?;
    if after.contains(&format!("<{tag}")) {
        return None;
    }
    Some(format!("sha256-{}", STANDARD.encode(Sha256::digest(body))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_cover_the_inline_blocks() {
        let page = "<style>a{}</style><p>x</p><script>go()</script>";
        assert_eq!(
            block_hash(page, "script").unwrap(),
            format!("sha256-{}", STANDARD.encode(Sha256::digest("go()")))
        );
        assert!(block_hash(page, "style").is_some());
        assert_eq!(
            block_hash("<script>a</script><script>b</script>", "script"),
            None
        );
        assert_eq!(block_hash("<p>no script</p>", "script"), None);
    }

    #[test]
    fn letter_codes_get_a_letter_keyboard() {
        assert_eq!(PAGE.matches(NUMERIC_FIELD).count(), 1);
        assert!(LETTERS_PAGE.len() > PAGE.len());
        let letters = std::str::from_utf8(&LETTERS_PAGE).unwrap();
        assert!(letters.contains(LETTERS_FIELD) && !letters.contains(NUMERIC_FIELD));
        assert!(letters.contains(r#"autocomplete="one-time-code""#));
    }

    #[test]
    fn the_shipped_page_is_self_contained() {
        let policy = POLICY.to_str().unwrap();
        assert!(policy.starts_with("default-src 'none'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        // Nothing is loaded from elsewhere, and no style attributes (the policy would drop them).
        for banned in ["src=", "href=", "style=", "@import", "url("] {
            assert!(!PAGE.contains(banned), "demo.html contains {banned:?}");
        }
    }
}
