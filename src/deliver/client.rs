//! One HTTP attempt: build the signed request, send it with a hard deadline, and
//! classify what came back. Redirects are never followed (hyper does not follow
//! them, and a 3xx is treated as a failure).

use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::redact;
use super::sign::signature_header;
use crate::config::{Auth, Encoding, EndpointConfig, Format};

/// Most of a response body siphook reads (it only needs the status).
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Why an endpoint's HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("endpoint {endpoint}: {what} \"{path}\": {reason}")]
    Pem {
        /// Endpoint name.
        endpoint: String,
        /// Which setting.
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the TLS settings.
    #[error("endpoint {endpoint}: TLS configuration: {source}")]
    Tls {
        /// Endpoint name.
        endpoint: String,
        /// The rustls error.
        source: rustls::Error,
    },
}

/// The pooled client of one endpoint.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// Builds the client: webpki (or the system's) roots plus `ca_file`, optional client certificate,
    /// HTTP/1.1 and HTTP/2 by ALPN, TLS 1.2 and 1.3 only (rustls offers nothing older).
    pub fn new(ep: &EndpointConfig) -> Result<HttpClient, ClientError> {
        let pem_err =
            |what: &'static str, path: &std::path::Path, reason: String| ClientError::Pem {
                endpoint: ep.name.clone(),
                what,
                path: path.display().to_string(),
                reason,
            };
        let mut roots = rustls::RootCertStore::empty();
        if ep.native_roots {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(endpoint = %ep.name, error = %e, "while loading the system's trust store");
            }
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(ClientError::Pem {
                    endpoint: ep.name.clone(),
                    what: "tls_roots",
                    path: "native".into(),
                    reason: "the system trust store holds no usable certificate".into(),
                });
            }
        } else {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if let Some(path) = &ep.ca_file {
            let certs = read_certs(path).map_err(|r| pem_err("ca_file", path, r))?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| pem_err("ca_file", path, e.to_string()))?;
            }
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let tls = match (&ep.client_cert_file, &ep.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert).map_err(|r| pem_err("client_cert_file", cert, r))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| pem_err("client_key_file", key, e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|source| ClientError::Tls {
                        endpoint: ep.name.clone(),
                        source,
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
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

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in file".into());
    }
    Ok(certs)
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// Worth another try later: connect error, timeout, 408, 425, 429, 5xx.
    Retry {
        /// Status, when there was a response.
        status: Option<u16>,
        /// What went wrong, without secrets or event content.
        error: String,
        /// The receiver's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// 410 Gone: stop sending to this endpoint until an operator resumes it.
    Gone,
    /// Any other answer (3xx, 4xx, or `webhook-delivery: abort-message`): no retry.
    Rejected {
        /// The status.
        status: u16,
        /// Why it is final.
        error: String,
    },
}

impl Outcome {
    /// Bounded metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Gone => "gone",
            Outcome::Rejected { .. } => "rejected",
        }
    }

    /// Status code label ("none" when no response).
    pub fn code(&self) -> String {
        match self {
            Outcome::Delivered { status } | Outcome::Rejected { status, .. } => status.to_string(),
            Outcome::Retry {
                status: Some(s), ..
            } => s.to_string(),
            Outcome::Retry { status: None, .. } => "none".into(),
            Outcome::Gone => "410".into(),
        }
    }
}

/// Sends one signed attempt of `event_json` and classifies the answer.
pub async fn attempt(
    client: &HttpClient,
    ep: &EndpointConfig,
    event_id: &str,
    event_json: &Bytes,
    now_unix: i64,
) -> (Outcome, Duration) {
    let started = Instant::now();
    let (body, content_type) = match render(ep, event_json) {
        Ok(b) => b,
        Err(e) => {
            return (
                Outcome::Rejected {
                    status: 0,
                    error: e,
                },
                started.elapsed(),
            );
        }
    };
    let signature = signature_header(&ep.secrets, event_id, now_unix, &body);
    let mut req = hyper::Request::post(ep.url.clone())
        .header("content-type", content_type)
        .header("user-agent", concat!("siphook/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", event_id)
        .header("webhook-timestamp", now_unix.to_string())
        .header("webhook-signature", signature);
    match &ep.auth {
        Some(Auth::Bearer(t)) => req = req.header("authorization", format!("Bearer {}", t.0)),
        Some(Auth::Basic { user, password }) => {
            let cred =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.0));
            req = req.header("authorization", format!("Basic {cred}"));
        }
        None => {}
    }
    let mut req = match req.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => {
            return (
                Outcome::Rejected {
                    status: 0,
                    error: format!("cannot build request: {e}"),
                },
                started.elapsed(),
            );
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
    let outcome = match tokio::time::timeout(ep.timeout, exchange).await {
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
    };
    (outcome, started.elapsed())
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

/// The body in the endpoint's format and encoding, and its content type. Redaction
/// comes first, so the shapes below and the signature see only what the endpoint
/// may see; an unredacted siphook-JSON body goes out as the exact stored bytes.
fn render(ep: &EndpointConfig, event_json: &Bytes) -> Result<(Bytes, &'static str), String> {
    if ep.redact.is_none() && ep.format == Format::Siphook && ep.encoding == Encoding::Json {
        return Ok((event_json.clone(), "application/json"));
    }
    let mut value = serde_json::from_slice::<serde_json::Value>(event_json)
        .map_err(|e| format!("stored event is not JSON: {e}"))?;
    if let Some(r) = &ep.redact {
        redact::apply(r, &mut value);
    }
    let (value, json_type) = match ep.format {
        Format::Siphook => (value, "application/json"),
        Format::CloudEvents => (
            super::format::cloudevent(&value),
            "application/cloudevents+json",
        ),
    };
    Ok(match ep.encoding {
        // Serializing a parsed JSON value cannot fail.
        Encoding::Json => (
            serde_json::to_vec(&value).unwrap_or_default().into(),
            json_type,
        ),
        Encoding::Form => (
            super::format::form_encode(&value).into_bytes().into(),
            "application/x-www-form-urlencoded",
        ),
    })
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
