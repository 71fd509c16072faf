//! Alternative body shapes some platforms insist on: CloudEvents 1.0 structured mode,
//! and flat `application/x-www-form-urlencoded` (Twilio-style receivers).

use serde_json::{Map, Value, json};

/// Wraps an event as a CloudEvents 1.0 structured-mode object; `id` stays the event
/// id so receivers deduplicate the same way.
pub fn cloudevent(event: &Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": event["id"],
        "source": "/siphook",
        "type": event["type"],
        "time": event["timestamp"],
        "subject": event["call"]["id"],
        "datacontenttype": "application/json",
        "data": event,
    })
}

/// Flattens nested objects to dotted keys (`call.from.user=%2B1555…`); null becomes
/// an empty value so every key is always present.
pub fn form_encode(v: &Value) -> String {
    let mut pairs = Vec::new();
    flatten("", v, &mut pairs);
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) => flatten_map(m, &key, out),
        Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), item, out);
            }
        }
        Value::Null => out.push((prefix.to_owned(), String::new())),
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

fn flatten_map(
    m: &Map<String, Value>,
    key: &dyn Fn(&str) -> String,
    out: &mut Vec<(String, String)>,
) {
    for (k, v) in m {
        flatten(&key(k), v, out);
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_flattens_and_escapes() {
        let v = json!({"type": "call.completed", "call": {"from": {"user": "+1555 1", "tag": null}}, "n": 3});
        assert_eq!(
            form_encode(&v),
            // Keys come out sorted: serde_json maps are ordered.
            "call.from.tag=&call.from.user=%2B1555+1&n=3&type=call.completed"
        );
    }

    #[test]
    fn cloudevent_keeps_the_id() {
        let v = json!({"id": "evt_1", "type": "call.answered", "timestamp": "2026-11-22T07:00:00.000Z", "call": {"id": "call_1"}});
        let c = cloudevent(&v);
        assert_eq!(c["id"], "evt_1");
        assert_eq!(c["specversion"], "1.0");
        assert_eq!(c["data"], v);
    }
}
