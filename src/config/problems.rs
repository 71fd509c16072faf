//! Turning serde's errors into problems an operator can act on: key paths in the
//! form `sip.udp[0]`, values never echoed (they may be secrets), and the bad value
//! removed so the next problem can be found too.

/// serde quotes the offending value ("invalid type: string \"whsec_…\", expected a
/// sequence"); the value may be a secret, so only the expectation is kept.
pub(super) fn without_value(message: &str) -> String {
    match message.find(", expected ") {
        Some(i) if message.starts_with("invalid") => {
            format!("wrong type: expected {}", &message[i + 11..])
        }
        _ if message.starts_with("invalid") => "wrong type or value".to_owned(),
        _ => message.to_owned(),
    }
}

/// Type errors reported before giving up on a file.
pub(super) const MAX_TYPE_ERRORS: usize = 64;

/// `sip.udp[0]` rather than serde_path_to_error's `sip.udp[0]`-ish default forms.
pub(super) fn display_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// Removes the value at `path`; false when there is nothing to remove.
pub(super) fn remove_at(table: &mut toml::Table, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let mut segs: Vec<&Segment> = path.iter().collect();
    // A bad element takes its whole list with it: removing just the element would
    // shift the indexes that later problems report.
    while matches!(segs.last(), Some(Segment::Seq { .. })) {
        segs.pop();
    }
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut cur: &mut toml::Value = match parents.first() {
        Some(Segment::Map { key }) => match table.get_mut(key) {
            Some(v) => v,
            None => return false,
        },
        None => {
            return match last {
                Segment::Map { key } => table.remove(key).is_some(),
                _ => false,
            };
        }
        _ => return false,
    };
    for seg in &parents[1..] {
        cur = match (seg, cur) {
            (Segment::Map { key }, toml::Value::Table(t)) => match t.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, toml::Value::Array(a)) => match a.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Segment::Map { key }, toml::Value::Table(t)) => t.remove(key).is_some(),
        _ => false,
    }
}

pub(super) fn format_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", format_path(parent)),
        P::Map { parent, key } => match format_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            format_path(parent)
        }
    }
}
