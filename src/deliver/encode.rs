//! The encoder every transport shares: one event as one endpoint receives it.
//! Redaction, format and encoding shape the body, and the Standard Webhooks
//! headers sign it, whether it goes out as an HTTP POST or a broker message, so
//! a stream consumer verifies an event's origin exactly as a webhook receiver does.

use bytes::Bytes;
use serde::Deserialize;

use super::redact;
use super::sign::signature_header;
use crate::config::{Encoding, EndpointConfig, Format};

/// An event ready to send: the body this endpoint may see and what signs it.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The bytes sent (and signed).
    pub body: Bytes,
    /// Their media type.
    pub content_type: &'static str,
    /// `webhook-id`: the event id.
    pub id: String,
    /// `webhook-timestamp`: seconds since the epoch, when this attempt was made.
    pub timestamp: i64,
    /// `webhook-signature`: one `v1,` signature per configured secret.
    pub signature: String,
}

/// Shapes and signs `event_json` (the stored bytes) for `ep`. An error means the
/// stored event cannot be rendered: no attempt can ever succeed.
pub fn encode(
    ep: &EndpointConfig,
    event_id: &str,
    event_json: &Bytes,
    now_unix: i64,
) -> Result<Encoded, String> {
    let (body, content_type) = render(ep, event_json)?;
    let signature = signature_header(&ep.secrets, event_id, now_unix, &body);
    Ok(Encoded {
        body,
        content_type,
        id: event_id.to_owned(),
        timestamp: now_unix,
        signature,
    })
}

/// The headers a broker message carries besides its payload, as a webhook does:
/// `webhook-id`, `webhook-timestamp`, `webhook-signature` and `content-type`.
pub fn webhook_headers(e: &Encoded) -> [(&'static str, String); 4] {
    [
        ("webhook-id", e.id.clone()),
        ("webhook-timestamp", e.timestamp.to_string()),
        ("webhook-signature", e.signature.clone()),
        ("content-type", e.content_type.to_owned()),
    ]
}

/// What a broker routes by, read from the stored event: its type (a NATS
/// subject's `{type}`) and its call's id (a Kafka record key). Neither is
/// personal data, and redaction never touches them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// `type`, e.g. `call.answered`.
    pub event_type: String,
    /// `call.id`, or the event id for an event without a call (`webhook.test`).
    pub key: String,
}

/// Reads [`Routing`] from stored event JSON.
pub fn routing(event_json: &[u8]) -> Result<Routing, String> {
    #[derive(Deserialize)]
    struct Call<'a> {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
    }
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
        #[serde(rename = "type", borrow)]
        event_type: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        call: Option<Call<'a>>,
    }
    let e: Envelope<'_> =
        serde_json::from_slice(event_json).map_err(|e| format!("stored event is not JSON: {e}"))?;
    Ok(Routing {
        event_type: e.event_type.into_owned(),
        key: e.call.map_or(e.id, |c| c.id).into_owned(),
    })
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
    fn routing_reads_the_type_and_the_call_id_even_with_escapes() {
        let r = routing(br#"{"id":"evt_1","type":"call.answered","call":{"id":"call_\u0041b"}}"#);
        assert_eq!(
            r,
            Ok(Routing {
                event_type: "call.answered".into(),
                key: "call_Ab".into(),
            })
        );
        let test = routing(br#"{"id":"evt_test_1","type":"webhook.test","data":{}}"#);
        assert_eq!(test.map(|r| r.key), Ok("evt_test_1".into()));
        assert!(routing(b"not json").is_err());
    }
}
