//! One HTTP attempt: build the signed request, send it with a hard deadline, and
//! classify what came back. Redirects are never followed (hyper does not follow
//! them, and a 3xx is treated as a failure).

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{Outcome, TransportError};
use crate::config::{Auth, EndpointConfig, Target};
use crate::deliver::encode::encode;

/// Most of a response body siphook reads (it only needs the status).
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// The pooled client of one endpoint.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// Builds the client: webpki (or the system's) roots plus `ca_file`, optional client certificate,
    /// HTTP/1.1 and HTTP/2 by ALPN, TLS 1.2 and 1.3 only (rustls offers nothing older).
    pub fn new(ep: &EndpointConfig) -> Result<HttpClient, TransportError> {
        let tls = super::tls::client_config(ep)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(ep.timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(HttpClient { client })
    }
}

/// Sends one signed attempt of `event_json` and classifies the answer.
pub async fn attempt(
    client: &HttpClient,
    ep: &EndpointConfig,
    event_id: &str,
    event_json: &Bytes,
    now_unix: i64,
) -> Outcome {
    let (encoded, url) = match (encode(ep, event_id, event_json, now_unix), &ep.target) {
        (Ok(e), Target::Http(url)) => (e, url.clone()),
        (Err(e), _) => {
            return Outcome::rejected(e);
        }
        (Ok(_), _) => {
            return Outcome::rejected("not a webhook endpoint".into());
        }
    };
    let mut req = hyper::Request::post(url)
        .header("content-type", encoded.content_type)
        .header("user-agent", concat!("siphook/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", encoded.id)
        .header("webhook-timestamp", encoded.timestamp.to_string())
        .header("webhook-signature", encoded.signature);
    match &ep.auth {
        Some(Auth::Bearer(t)) => req = req.header("authorization", format!("Bearer {}", t.0)),
        Some(Auth::Basic { user, password }) => {
            let cred =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.0));
            req = req.header("authorization", format!("Basic {cred}"));
        }
        None => {}
    }
    let mut req = match req.body(Full::new(encoded.body)) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::rejected(format!("cannot build request: {e}"));
        }
    };
    for (k, v) in &ep.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.0.as_str()),
        ) {
            req.headers_mut().insert(k, v);
        }
    }
    // hyper's client has no overall deadline: the whole exchange, body included, is
    // wrapped so a receiver that stalls anywhere costs at most `timeout`.
    let exchange = async {
        let resp = client.client.request(req).await.map_err(|e| describe(&e))?;
        let status = resp.status().as_u16();
        let abort = resp
            .headers()
            .get("webhook-delivery")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"abort-message"));
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| parse_retry_after(v.to_str().ok()?));
        let _ = Limited::new(resp.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await;
        Ok::<_, String>((status, abort, retry_after))
    };
    match tokio::time::timeout(ep.timeout, exchange).await {
        Err(_) => Outcome::Retry {
            status: None,
            error: format!("timed out after {}", humantime::format_duration(ep.timeout)),
            retry_after: None,
        },
        Ok(Err(error)) => Outcome::Retry {
            status: None,
            error,
            retry_after: None,
        },
        Ok(Ok((status, abort, retry_after))) => classify(status, abort, retry_after),
    }
}

fn classify(status: u16, abort: bool, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered { status },
        _ if abort => Outcome::Rejected {
            status,
            error: "receiver asked to abort (webhook-delivery: abort-message)".into(),
        },
        410 => Outcome::Gone,
        408 | 425 | 429 | 500..=599 => Outcome::Retry {
            status: Some(status),
            error: format!("HTTP {status}"),
            retry_after,
        },
        _ => Outcome::Rejected {
            status,
            error: format!("HTTP {status}"),
        },
    }
}

/// The error chain of a failed request, joined; hyper's top-level message alone
/// ("client error (Connect)") does not tell an operator what happened.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    parts.join(": ")
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_http_date() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        let in_a_minute = std::time::SystemTime::now() + Duration::from_secs(61);
        let d = parse_retry_after(&httpdate::fmt_http_date(in_a_minute)).unwrap();
        assert!(
            d > Duration::from_secs(55) && d <= Duration::from_secs(61),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify(204, false, None),
            Outcome::Delivered { status: 204 }
        );
        assert_eq!(classify(410, false, None), Outcome::Gone);
        assert!(matches!(
            classify(301, false, None),
            Outcome::Rejected { status: 301, .. }
        ));
        assert!(matches!(
            classify(503, true, None),
            Outcome::Rejected { status: 503, .. }
        ));
        for s in [408, 425, 429, 500, 599] {
            assert!(
                matches!(classify(s, false, None), Outcome::Retry { .. }),
                "{s}"
            );
        }
    }
}
