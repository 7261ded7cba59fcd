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

    /// Like [`emit`](Self::emit), but on stderr when `aside` is true: when a command's output
    /// file is standard output (`-`, `/dev/stdout`), its report must not end up in that data.
    pub fn emit_aside(&self, aside: bool, value: &Value, text: &str) {
        if !aside {
            return self.emit(value, text);
        }
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(s) => eprintln!("{s}"),
                Err(e) => eprintln!("error: cannot encode JSON: {e}"),
            }
        } else if !text.is_empty() {
            eprintln!("{}", text.trim_end_matches('\n'));
        }
    }

    /// Reports an error with its whole context chain, each cause once (see [`error_message`]).
    pub fn error(&self, e: &anyhow::Error) {
        let message = error_message(e);
        eprintln!("error: {message}");
        if self.json {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            println!(
                "{}",
                json!({"ok": false, "error": message, "causes": chain})
            );
        }
    }
}

/// Renders an error and its causes as one line, `top: cause: cause`, printing each cause only
/// once.
///
/// Many error types already embed their source in their message (`#[error("...: {source}")]`
/// or `"... ({source})"`) and also expose it as `source()`, so anyhow's `{:#}` would print such a
/// cause twice. Here a cause is appended only when its text does not already appear in what has
/// been rendered so far (so no information is dropped); causes that only wrap (anyhow context,
/// or errors that do not embed their source) still appear, once.
pub fn error_message(e: &anyhow::Error) -> String {
    let mut chain = e.chain();
    let mut message = chain.next().map(|c| c.to_string()).unwrap_or_default();
    for cause in chain {
        let text = cause.to_string();
        if text.is_empty() || message.contains(&text) {
            continue;
        }
        message.push_str(": ");
        message.push_str(&text);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    /// An error that embeds its source in its message and also exposes it as `source()`.
    #[derive(Debug, thiserror::Error)]
    #[error("{path}: cannot read config file: {source}")]
    struct Embeds {
        path: String,
        #[source]
        source: std::io::Error,
    }

    /// An error that does not embed its source.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot load key")]
    struct Wraps {
        #[source]
        source: std::io::Error,
    }

    fn not_found() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory")
    }

    #[test]
    fn embedded_cause_is_printed_once() {
        let e = anyhow::Error::new(Embeds {
            path: "/nonexistent.toml".into(),
            source: not_found(),
        });
        assert_eq!(
            error_message(&e),
            "/nonexistent.toml: cannot read config file: No such file or directory"
        );
        // anyhow's alternate form repeats it, which is what this function avoids.
        assert_eq!(format!("{e:#}").matches("No such file").count(), 2);
    }

    #[test]
    fn wrapped_causes_still_appear_once() {
        let e = anyhow::Error::new(Wraps {
            source: not_found(),
        });
        assert_eq!(
            error_message(&e),
            "cannot load key: No such file or directory"
        );
        let e: anyhow::Error = Err::<(), _>(Embeds {
            path: "a.toml".into(),
            source: not_found(),
        })
        .context("config check")
        .unwrap_err();
        assert_eq!(
            error_message(&e),
            "config check: a.toml: cannot read config file: No such file or directory"
        );
        // A source embedded in parentheses is not repeated either.
        let e = anyhow::Error::new(crate::args::ArgError::Base64 {
            arg: "--tik".into(),
            source: base64::DecodeError::InvalidByte(2, b'_'),
        });
        let msg = error_message(&e);
        assert_eq!(msg.matches("Invalid symbol").count(), 1, "{msg}");
        let e = anyhow::anyhow!("plain");
        assert_eq!(error_message(&e), "plain");
    }
}
