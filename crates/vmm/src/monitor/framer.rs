//! Splits a QMP byte stream into JSON texts.
//!
//! QMP input is a stream of JSON values with no required delimiter (clients such as
//! `qemu.qmp` send no newline). The framer tracks string/escape state and bracket depth and
//! yields each complete top-level text; stray tokens outside any object are yielded on their
//! own so the dispatcher can answer "JSON parse error" and carry on, as QEMU's streamer does.
//! A text nested deeper than [`MAX_NESTING`] is reported once and skipped, as QEMU does.
//! Like QEMU's parser it also accepts single-quoted strings (`{'execute': 'stop'}`), which old
//! shell scripts use; they are rewritten to standard JSON strings on the way through.
//! It never parses JSON itself and never logs content.

/// Largest accepted message in bytes; a client sending more is answered and dropped.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Deepest accepted nesting of objects/arrays (QEMU's json-streamer limit, `MAX_NESTING`
/// in `qobject/json-streamer.c`): 1024 levels are parsed, the 1025th is an error.
pub const MAX_NESTING: usize = 1024;

/// One unit of framed input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete top-level JSON text (or a stray token) to parse.
    Json(Vec<u8>),
    /// A message grew past [`MAX_MESSAGE_BYTES`]; the stream cannot be resynchronised.
    TooLarge,
    /// Nesting went past [`MAX_NESTING`]. Not fatal: as QEMU's streamer does, the rest of
    /// that text is skipped (brackets and strings still tracked) until its brackets balance,
    /// then framing resumes.
    TooDeep,
}

/// Incremental framer state.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    depth: usize,
    /// The open string's quote byte (`"` or `'`), 0 outside strings.
    quote: u8,
    escape: bool,
    bare: bool,
    dead: bool,
    /// Skipping the rest of a text that went past [`MAX_NESTING`].
    skip: bool,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl Framer {
    /// A framer at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of the message currently being assembled.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Feed `data`; complete frames are appended to `out`. After the fatal frame
    /// [`Frame::TooLarge`] further input is ignored.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Frame>) {
        for &b in data {
            if self.dead {
                return;
            }
            if self.skip {
                self.skip_byte(b);
                continue;
            }
            if self.bare {
                if is_ws(b) || matches!(b, b'{' | b'[' | b'"' | b'\'' | b'}' | b']') {
                    self.bare = false;
                    out.push(Frame::Json(std::mem::take(&mut self.buf)));
                    // fall through: `b` starts the next token
                } else {
                    self.buf.push(b);
                    self.check_size(out);
                    continue;
                }
            }
            if self.buf.is_empty() {
                match b {
                    _ if is_ws(b) => {}
                    b'{' | b'[' => {
                        self.buf.push(b);
                        self.depth = 1;
                    }
                    b'"' | b'\'' => {
                        self.buf.push(b'"');
                        self.quote = b;
                        self.depth = 0;
                    }
                    b'}' | b']' => out.push(Frame::Json(vec![b])),
                    _ => {
                        self.buf.push(b);
                        self.bare = true;
                    }
                }
                continue;
            }
            if self.quote != 0 {
                self.push_string_byte(b);
                if self.check_size(out) {
                    return;
                }
                if self.quote == 0 && self.depth == 0 {
                    out.push(Frame::Json(std::mem::take(&mut self.buf)));
                }
                continue;
            }
            if b == b'\'' {
                self.buf.push(b'"');
            } else {
                self.buf.push(b);
            }
            if self.check_size(out) {
                return;
            }
            match b {
                b'"' | b'\'' => self.quote = b,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > MAX_NESTING {
                        self.skip = true;
                        self.buf = Vec::new();
                        out.push(Frame::TooDeep);
                    }
                }
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        out.push(Frame::Json(std::mem::take(&mut self.buf)));
                    }
                }
                _ => {}
            }
        }
    }

    /// One byte of a text being skipped: only strings and bracket depth are followed.
    fn skip_byte(&mut self, b: u8) {
        if self.quote != 0 {
            if self.escape {
                self.escape = false;
            } else if b == b'\\' {
                self.escape = true;
            } else if b == self.quote {
                self.quote = 0;
            }
            return;
        }
        match b {
            b'"' | b'\'' => self.quote = b,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth -= 1;
                if self.depth == 0 {
                    self.skip = false;
                }
            }
            _ => {}
        }
    }

    /// One byte inside a string; single-quoted strings are rewritten to double-quoted JSON.
    fn push_string_byte(&mut self, b: u8) {
        let single = self.quote == b'\'';
        if self.escape {
            self.escape = false;
            if single && b == b'\'' {
                self.buf.push(b'\'');
            } else {
                self.buf.push(b'\\');
                self.buf.push(b);
            }
        } else if b == b'\\' {
            self.escape = true;
        } else if b == self.quote {
            self.quote = 0;
            self.buf.push(b'"');
        } else if single && b == b'"' {
            self.buf.extend_from_slice(b"\\\"");
        } else {
            self.buf.push(b);
        }
    }

    /// Returns true (and emits [`Frame::TooLarge`]) when the message is over the limit.
    fn check_size(&mut self, out: &mut Vec<Frame>) -> bool {
        if self.buf.len() > MAX_MESSAGE_BYTES {
            self.dead = true;
            self.buf = Vec::new();
            out.push(Frame::TooLarge);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = Framer::new();
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        out
    }

    fn json(s: &str) -> Frame {
        Frame::Json(s.as_bytes().to_vec())
    }

    #[test]
    fn splits_undelimited_objects() {
        let out = frames(&[br#"{"a":1}{"b":"}{"}"#, b"\n[1,[2]]"]);
        assert_eq!(
            out,
            vec![json(r#"{"a":1}"#), json(r#"{"b":"}{"}"#), json("[1,[2]]")]
        );
    }

    #[test]
    fn handles_split_chunks_and_escapes() {
        let out = frames(&[br#"{"a":"x\"#, br#"""}"#, b" ", br#"}{"c":2"#, b"}"]);
        assert_eq!(
            out,
            vec![json(r#"{"a":"x\""}"#), json("}"), json(r#"{"c":2}"#)]
        );
    }

    #[test]
    fn single_quoted_strings_become_json() {
        let out = frames(&[br#"{'execute': 'x', 'arguments': {'s': 'it\'s "q" \n}'}}"#]);
        assert_eq!(
            out,
            vec![json(
                r#"{"execute": "x", "arguments": {"s": "it's \"q\" \n}"}}"#
            )]
        );
        let Frame::Json(t) = &out[0] else { panic!() };
        let v: serde_json::Value = serde_json::from_slice(t).unwrap();
        assert_eq!(v["arguments"]["s"], "it's \"q\" \n}");
    }

    #[test]
    fn stray_tokens_are_frames() {
        let out = frames(&[b"foo bar{\"x\":1}\"str\" 12\n"]);
        assert_eq!(
            out,
            vec![
                json("foo"),
                json("bar"),
                json(r#"{"x":1}"#),
                json("\"str\""),
                json("12")
            ]
        );
    }

    #[test]
    fn oversize_is_fatal() {
        let mut f = Framer::new();
        let mut out = Vec::new();
        f.push(b"{\"a\":\"", &mut out);
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..17 {
            f.push(&chunk, &mut out);
        }
        assert_eq!(out, vec![Frame::TooLarge]);
        f.push(b"{}", &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn nesting_at_the_limit_is_one_frame() {
        let mut t = vec![b'['; MAX_NESTING];
        t.extend(vec![b']'; MAX_NESTING]);
        assert_eq!(frames(&[&t]), vec![Frame::Json(t.clone())]);
    }

    #[test]
    fn deep_nesting_skips_that_text_then_resumes() {
        let mut t = vec![b'['; MAX_NESTING + 1];
        // Brackets inside strings of the skipped text do not count.
        t.extend_from_slice(br#""]]]" ']]\'' "#);
        t.extend(vec![b']'; MAX_NESTING + 1]);
        t.extend_from_slice(br#"{"a":1}"#);
        assert_eq!(
            frames(&[&t[..10], &t[10..]]),
            vec![Frame::TooDeep, json(r#"{"a":1}"#)]
        );
    }
}
