//! The documentation's examples are held to the same schema as real events, so the
//! docs cannot drift from the contract unnoticed.

mod common;

use common::schema_errors;

#[test]
fn every_complete_example_in_events_md_matches_the_schema() {
    let md =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md")).unwrap();
    let mut checked = Vec::new();
    for block in md.split("```json").skip(1) {
        let Some((json, _)) = block.split_once("```") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
            continue;
        };
        if v.get("version").is_some() && v.get("call").is_some() {
            let errors = schema_errors(&v);
            assert!(
                errors.is_empty(),
                "example {} violates the schema: {errors:?}",
                v["type"]
            );
            checked.push(v["type"].as_str().unwrap_or_default().to_owned());
        }
    }
    checked.sort();
    checked.dedup();
    assert_eq!(
        checked,
        [
            "call.answered",
            "call.completed",
            "call.initiated",
            "call.ringing",
            "call.transferred"
        ]
    );
}
