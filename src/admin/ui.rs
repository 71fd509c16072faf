//! `/ui/`: the operator's console, a static page built into the binary. It holds
//! no data and needs no token to load; everything it shows it asks of `/v1` with
//! the token the operator enters (kept in the tab's session storage). The
//! content security policy lets it load only its own files and talk only to
//! the listener that served it: no CDN, no inline script, no frame.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::{Response, StatusCode};

use super::reply::Reply;

const INDEX: &str = include_str!("ui/index.html");
const APP: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's file at `path` (under `/ui`), or `None` for a path it does not have.
pub(super) fn serve(path: &str) -> Option<Reply> {
    let (body, kind) = match path {
        "/ui" => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
            r.headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/ui/"));
            return Some(r);
        }
        "/ui/" | "/ui/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/ui/app.js" => (APP, "text/javascript; charset=utf-8"),
        "/ui/style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert("content-security-policy", HeaderValue::from_static(POLICY));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // A new binary's console is never mixed with an old one's cached script.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}
