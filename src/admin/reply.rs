//! The responses every admin handler builds: JSON bodies and RFC 7807 problems.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::json;

/// The response type of every handler.
pub type Reply = Response<Full<Bytes>>;

/// A JSON response.
pub fn json_reply(status: StatusCode, body: &serde_json::Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(body).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// An RFC 7807 problem document.
pub fn problem(status: StatusCode, title: &str, detail: &str) -> Reply {
    let mut r = json_reply(
        status,
        &json!({"type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail}),
    );
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

/// 405 for a known path with the wrong method.
pub fn method_not_allowed() -> Reply {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
        "this path does not take that method",
    )
}
