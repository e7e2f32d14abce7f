//! The report page of a run (placeholder until the page is written).

use serde_json::Value;

/// The page of a run's JSON (see `runs::view`).
pub fn render(run: &Value) -> String {
    format!("<!doctype html><title>run</title><pre>{}</pre>", run)
}
