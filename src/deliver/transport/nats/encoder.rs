//! An event as a JetStream message: the subject from its type, the body a webhook
//! would carry, and the webhook's headers, so a stream consumer verifies the
//! signature the same way. `Nats-Msg-Id` is the event id: JetStream's duplicate
//! window drops a copy of an event it already holds (a retry after a lost
//! acknowledgement, or the other instance of an active-active pair).

use async_nats::HeaderMap;
use bytes::Bytes;

use crate::config::{EndpointConfig, NatsTarget};
use crate::deliver::encode::{encode, routing, webhook_headers};

/// One publish.
pub(super) struct Message {
    /// Where it goes.
    pub(super) subject: String,
    /// `Nats-Msg-Id`, the `webhook-*` headers, `content-type` and the endpoint's
    /// static headers.
    pub(super) headers: HeaderMap,
    /// The exact bytes a webhook of this endpoint would carry.
    pub(super) payload: Bytes,
}

/// Builds the message of one attempt; an error means the stored event cannot be
/// rendered at all.
pub(super) fn message(
    ep: &EndpointConfig,
    target: &NatsTarget,
    event_id: &str,
    event_json: &Bytes,
    now_unix: i64,
) -> Result<Message, String> {
    let route = routing(event_json)?;
    let e = encode(ep, event_id, event_json, now_unix)?;
    let mut headers = HeaderMap::new();
    for (k, v) in &ep.headers {
        headers.insert(k.as_str(), v.0.as_str());
    }
    headers.insert(async_nats::header::NATS_MESSAGE_ID, e.id.as_str());
    for (k, v) in webhook_headers(&e) {
        headers.insert(k, v.as_str());
    }
    Ok(Message {
        subject: target.subject_for(&route.event_type),
        headers,
        payload: e.body,
    })
}
