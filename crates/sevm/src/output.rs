//! Output formatting: human text by default, JSON with `--json`.
//!
//! Subcommands build a `serde_json::Value` report and a text rendering; this module decides
//! which one reaches stdout. Errors go to stderr (and, with `--json`, also as a JSON object on
//! stdout so scripts always get a parseable answer).

use serde_json::{json, Value};

/// Where and how results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    /// Makes an output sink; `json` selects JSON on stdout.
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    /// Prints a report: `value` as pretty JSON, or `text` as is.
    pub fn emit(&self, value: &Value, text: &str) {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("error: cannot encode JSON: {e}"),
            }
        } else if !text.is_empty() {
            if text.ends_with('\n') {
                print!("{text}");
            } else {
                println!("{text}");
            }
        }
    }

    /// Reports an error with its whole context chain.
    pub fn error(&self, e: &anyhow::Error) {
        eprintln!("error: {e:#}");
        if self.json {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            println!(
                "{}",
                json!({"ok": false, "error": format!("{e:#}"), "causes": chain})
            );
        }
    }
}
