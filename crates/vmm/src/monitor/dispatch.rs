//! QMP command dispatch: request validation, argument checking and the command table.
//!
//! Pure with respect to I/O except `pmemsave`/`memsave` (which write the named file); the
//! socket side lives in `server`. Arguments are never logged.

use super::dumpfile::DumpFile;
use super::framer::MAX_NESTING;
use super::hmp::{self, HmpState};
use super::{qemu_msg, MonitorBackend, MonitorError, SevState, QEMU_COMPAT_VERSION};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sev_proto::secret::PacketHeader;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Chunk size for `pmemsave`/`memsave` reads through the debug path.
const SAVE_CHUNK: usize = 64 * 1024;

/// Per-connection protocol state.
#[derive(Debug, Default)]
pub struct Session {
    negotiated: bool,
    hmp: HmpState,
}

impl Session {
    /// A fresh connection (capabilities not negotiated).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `qmp_capabilities` succeeded on this connection.
    pub fn negotiated(&self) -> bool {
        self.negotiated
    }
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The response object (`return` or `error`, with `id` echoed).
    pub msg: Value,
    /// This request completed capabilities negotiation (start sending events).
    pub negotiated_now: bool,
    /// `quit` succeeded: call [`MonitorBackend::quit`] after the reply is written.
    pub quit: bool,
}

/// Executes QMP requests against a backend.
#[derive(Clone)]
pub struct Dispatcher {
    backend: Arc<dyn MonitorBackend>,
}

/// Argument types, named as QEMU names them in "expected: ..." messages.
#[derive(Clone, Copy)]
enum Ty {
    Int,
    UInt,
    Str,
    StrList,
}

type Args = Map<String, Value>;

/// Validate `args` against `schema` in schema order, then reject unexpected members (QEMU's
/// qobject-input visitor order).
fn check_args(args: &Args, schema: &[(&str, Ty, bool)]) -> Result<(), MonitorError> {
    for &(name, ty, required) in schema {
        let Some(v) = args.get(name) else {
            if required {
                return Err(MonitorError::generic(format!(
                    "Parameter '{name}' is missing"
                )));
            }
            continue;
        };
        let bad_type = |expected: &str| {
            MonitorError::generic(format!(
                "Invalid parameter type for '{name}', expected: {expected}"
            ))
        };
        match ty {
            Ty::Int => {
                if !v.is_number() {
                    return Err(bad_type("integer"));
                }
                if v.as_i64().is_none() {
                    return Err(MonitorError::generic(format!(
                        "Parameter '{name}' expects int64"
                    )));
                }
            }
            Ty::UInt => {
                if !v.is_number() {
                    return Err(bad_type("integer"));
                }
                if v.as_u64().is_none() {
                    return Err(MonitorError::generic(format!(
                        "Parameter '{name}' expects uint64"
                    )));
                }
            }
            Ty::Str => {
                if !v.is_string() {
                    return Err(bad_type("string"));
                }
            }
            Ty::StrList => {
                let Some(items) = v.as_array() else {
                    return Err(bad_type("array"));
                };
                for (i, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        return Err(MonitorError::generic(format!(
                            "Invalid parameter type for '{name}[{i}]', expected: string"
                        )));
                    }
                }
            }
        }
    }
    if let Some(extra) = args.keys().find(|k| !schema.iter().any(|(n, _, _)| n == k)) {
        return Err(MonitorError::generic(format!(
            "Parameter '{extra}' is unexpected"
        )));
    }
    Ok(())
}

fn arg_str<'a>(args: &'a Args, name: &str) -> Option<&'a str> {
    args.get(name).and_then(Value::as_str)
}

fn arg_i64(args: &Args, name: &str) -> Option<i64> {
    args.get(name).and_then(Value::as_i64)
}

fn arg_u64(args: &Args, name: &str) -> Option<u64> {
    args.get(name).and_then(Value::as_u64)
}

fn error_value(e: &MonitorError) -> Value {
    json!({"error": {"class": e.class(), "desc": e.desc()}})
}

/// Deepest bracket nesting of a JSON text (brackets inside strings do not count).
fn nesting_depth(text: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in text {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Parse one JSON text of at most [`MAX_NESTING`] levels (checked by the caller): serde_json's
/// own limit (128) is lifted so that the protocol limit is QEMU's 1024.
fn parse_json(text: &[u8]) -> serde_json::Result<Value> {
    use serde::Deserialize as _;
    let mut de = serde_json::Deserializer::from_slice(text);
    de.disable_recursion_limit();
    let v = Value::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Decode base64 as QEMU does for SEV blobs: empty or undecodable input is an error.
fn decode_b64(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    match B64.decode(s.trim()) {
        Ok(v) if !v.is_empty() => Some(Zeroizing::new(v)),
        _ => None,
    }
}

/// Names of every command, for `query-commands`.
pub(crate) const COMMANDS: &[&str] = &[
    "qmp_capabilities",
    "query-commands",
    "query-version",
    "query-status",
    "query-kvm",
    "stop",
    "cont",
    "system_reset",
    "system_powerdown",
    "quit",
    "query-sev",
    "query-sev-launch-measure",
    "query-sev-capabilities",
    "sev-inject-launch-secret",
    "query-sev-attestation-report",
    "pmemsave",
    "memsave",
    "human-monitor-command",
];

impl Dispatcher {
    /// A dispatcher over `backend`.
    pub fn new(backend: Arc<dyn MonitorBackend>) -> Self {
        Self { backend }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn MonitorBackend> {
        &self.backend
    }

    /// The greeting sent on connect. No capabilities are offered (no OOB), so clients such
    /// as `qemu.qmp` negotiate with empty arguments.
    pub fn greeting(&self) -> Value {
        json!({"QMP": {"version": version_value(), "capabilities": []}})
    }

    /// Handle one framed JSON text.
    pub fn handle_text(&self, session: &mut Session, text: &[u8]) -> Reply {
        let plain = |msg| Reply {
            msg,
            negotiated_now: false,
            quit: false,
        };
        if nesting_depth(text) > MAX_NESTING {
            return plain(error_value(&MonitorError::generic(
                qemu_msg::JSON_NESTING_LIMIT,
            )));
        }
        let req: Value = match parse_json(text) {
            Ok(v) => v,
            Err(e) => {
                return plain(error_value(&MonitorError::generic(format!(
                    "JSON parse error, {e}"
                ))))
            }
        };
        let Value::Object(req) = req else {
            return plain(error_value(&MonitorError::generic(
                "QMP input must be a JSON object",
            )));
        };
        let id = req.get("id").cloned();
        let mut reply = self.handle_request(session, &req);
        if let (Some(id), Value::Object(m)) = (id, &mut reply.msg) {
            m.insert("id".into(), id);
        }
        reply
    }

    fn handle_request(&self, session: &mut Session, req: &Map<String, Value>) -> Reply {
        let mut reply = Reply {
            msg: Value::Null,
            negotiated_now: false,
            quit: false,
        };
        let result = self.execute(session, req, &mut reply);
        reply.msg = match result {
            Ok(v) => json!({ "return": v }),
            Err(e) => {
                tracing::debug!(class = e.class(), "qmp command failed");
                error_value(&e)
            }
        };
        reply
    }

    fn execute(
        &self,
        session: &mut Session,
        req: &Map<String, Value>,
        reply: &mut Reply,
    ) -> Result<Value, MonitorError> {
        if let Some(k) = req
            .keys()
            .find(|k| !matches!(k.as_str(), "execute" | "arguments" | "id"))
        {
            return Err(MonitorError::generic(format!(
                "QMP input member '{k}' is unexpected"
            )));
        }
        let cmd = match req.get("execute") {
            None => return Err(MonitorError::generic("QMP input lacks member 'execute'")),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => {
                return Err(MonitorError::generic(
                    "QMP input member 'execute' must be a string",
                ))
            }
        };
        let empty = Map::new();
        let args = match req.get("arguments") {
            None => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(MonitorError::generic(
                    "QMP input member 'arguments' must be an object",
                ))
            }
        };
        if !session.negotiated && cmd != "qmp_capabilities" {
            return Err(MonitorError::CommandNotFound(
                qemu_msg::EXPECTING_NEGOTIATION.into(),
            ));
        }
        // Log only names from our own table: a client-chosen string never reaches the log.
        let logged = COMMANDS
            .iter()
            .find(|c| **c == cmd)
            .copied()
            .unwrap_or("<unknown>");
        tracing::debug!(command = logged, "qmp command");
        let b = &self.backend;
        match cmd {
            "qmp_capabilities" => {
                if session.negotiated {
                    return Err(MonitorError::CommandNotFound(
                        qemu_msg::ALREADY_NEGOTIATED.into(),
                    ));
                }
                check_args(args, &[("enable", Ty::StrList, false)])?;
                if let Some(first) = args
                    .get("enable")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
                {
                    let cap = first.as_str().unwrap_or_default();
                    return Err(MonitorError::generic(format!(
                        "Capability '{cap}' not available"
                    )));
                }
                session.negotiated = true;
                reply.negotiated_now = true;
                Ok(json!({}))
            }
            "query-commands" => {
                check_args(args, &[])?;
                Ok(Value::Array(
                    COMMANDS.iter().map(|c| json!({ "name": c })).collect(),
                ))
            }
            "query-version" => {
                check_args(args, &[])?;
                Ok(version_value())
            }
            "query-status" => {
                check_args(args, &[])?;
                let s = b.status();
                Ok(json!({"running": s == super::RunState::Running, "status": s.as_str()}))
            }
            "query-kvm" => {
                check_args(args, &[])?;
                let k = b.query_kvm();
                Ok(json!({"enabled": k.enabled, "present": k.present}))
            }
            "stop" => {
                check_args(args, &[])?;
                b.stop().map(|()| json!({}))
            }
            "cont" => {
                check_args(args, &[])?;
                b.cont().map(|()| json!({}))
            }
            "system_reset" => {
                check_args(args, &[])?;
                b.system_reset().map(|()| json!({}))
            }
            "system_powerdown" => {
                check_args(args, &[])?;
                b.system_powerdown().map(|()| json!({}))
            }
            "quit" => {
                check_args(args, &[])?;
                reply.quit = true;
                Ok(json!({}))
            }
            "query-sev" => {
                check_args(args, &[])?;
                let info = b
                    .sev_info()
                    .ok_or_else(|| MonitorError::generic(qemu_msg::SEV_NOT_AVAILABLE))?;
                Ok(info.to_query_sev())
            }
            "query-sev-launch-measure" => {
                check_args(args, &[])?;
                // QEMU keeps a launch measurement for SEV and SEV-ES guests only: an SNP
                // guest gets the same refusal as a guest without SEV.
                if b.sev_info().is_none_or(|i| i.snp_policy.is_some()) {
                    return Err(MonitorError::generic(qemu_msg::SEV_MEASURE_UNAVAILABLE));
                }
                let m = b.sev_launch_measure()?;
                Ok(json!({ "data": B64.encode(m) }))
            }
            "query-sev-capabilities" => {
                check_args(args, &[])?;
                if !b.query_kvm().enabled {
                    return Err(MonitorError::generic(qemu_msg::KVM_NOT_ENABLED));
                }
                let c = b.sev_capabilities()?;
                Ok(json!({
                    "pdh": B64.encode(&c.pdh),
                    "cert-chain": B64.encode(&c.cert_chain),
                    "cpu0-id": B64.encode(&c.cpu0_id),
                    "cbitpos": c.cbitpos,
                    "reduced-phys-bits": c.reduced_phys_bits,
                }))
            }
            "sev-inject-launch-secret" => {
                check_args(
                    args,
                    &[
                        ("packet-header", Ty::Str, true),
                        ("secret", Ty::Str, true),
                        ("gpa", Ty::UInt, false),
                    ],
                )?;
                let info = b
                    .sev_info()
                    .ok_or_else(|| MonitorError::generic(qemu_msg::SEV_NOT_ENABLED_FOR_GUEST))?;
                if info.state != SevState::LaunchSecret {
                    return Err(MonitorError::generic(format!(
                        "SEV: Not in correct state. (LSECRET) {:x}",
                        info.state.code()
                    )));
                }
                let hdr = decode_b64(arg_str(args, "packet-header").unwrap_or_default())
                    .ok_or_else(|| {
                        MonitorError::generic("SEV: Failed to decode sequence header")
                    })?;
                // Decoded here, where the bytes arrive: the firmware path takes the header as
                // its structure. QEMU passes a wrong length on to the firmware, which refuses
                // it; the message keeps QEMU's prefix and names the argument.
                let hdr = PacketHeader::from_bytes(&hdr).map_err(|e| {
                    MonitorError::generic(format!(
                        "SEV: failed to inject secret: 'packet-header': {e}"
                    ))
                })?;
                let data = decode_b64(arg_str(args, "secret").unwrap_or_default())
                    .ok_or_else(|| MonitorError::generic("SEV: Failed to decode data"))?;
                b.inject_launch_secret(&hdr, &data, arg_u64(args, "gpa"))?;
                Ok(json!({}))
            }
            "query-sev-attestation-report" => {
                check_args(args, &[("mnonce", Ty::Str, true)])?;
                if b.sev_info().is_none() {
                    return Err(MonitorError::generic(qemu_msg::SEV_NOT_ENABLED));
                }
                let raw = B64
                    .decode(arg_str(args, "mnonce").unwrap_or_default().trim())
                    .map_err(|_| MonitorError::generic("SEV: failed to decode mnonce input"))?;
                let mnonce: [u8; 16] = raw.as_slice().try_into().map_err(|_| {
                    MonitorError::generic(format!(
                        "SEV: mnonce must be 16 bytes (got {})",
                        raw.len()
                    ))
                })?;
                let report = b.attestation_report(&mnonce)?;
                Ok(json!({ "data": B64.encode(report) }))
            }
            "pmemsave" => {
                check_args(
                    args,
                    &[
                        ("val", Ty::Int, true),
                        ("size", Ty::Int, true),
                        ("filename", Ty::Str, true),
                    ],
                )?;
                let addr = arg_i64(args, "val").unwrap_or_default() as u64;
                let size = arg_i64(args, "size").unwrap_or_default();
                let file = arg_str(args, "filename").unwrap_or_default();
                self.save(addr, size, file, None).map(|()| json!({}))
            }
            "memsave" => {
                check_args(
                    args,
                    &[
                        ("val", Ty::Int, true),
                        ("size", Ty::Int, true),
                        ("filename", Ty::Str, true),
                        ("cpu-index", Ty::Int, false),
                    ],
                )?;
                let addr = arg_i64(args, "val").unwrap_or_default() as u64;
                let size = arg_i64(args, "size").unwrap_or_default();
                let file = arg_str(args, "filename").unwrap_or_default();
                let cpu = self.cpu_index(arg_i64(args, "cpu-index").unwrap_or(0))?;
                self.save(addr, size, file, Some(cpu)).map(|()| json!({}))
            }
            "human-monitor-command" => {
                check_args(
                    args,
                    &[
                        ("command-line", Ty::Str, true),
                        ("cpu-index", Ty::Int, false),
                    ],
                )?;
                let cpu = self.cpu_index(arg_i64(args, "cpu-index").unwrap_or(0))?;
                let line = arg_str(args, "command-line").unwrap_or_default();
                let out = hmp::run(b.as_ref(), &mut session.hmp, cpu, line)?;
                Ok(Value::String(out))
            }
            other => Err(MonitorError::CommandNotFound(format!(
                "The command {other} has not been found"
            ))),
        }
    }

    fn cpu_index(&self, idx: i64) -> Result<u32, MonitorError> {
        match u32::try_from(idx) {
            Ok(c) if c < self.backend.vcpu_count() => Ok(c),
            _ => Err(MonitorError::generic(
                "Parameter 'cpu-index' expects a CPU number",
            )),
        }
    }

    /// `pmemsave` (cpu `None`, physical) / `memsave` (virtual of `cpu`).
    ///
    /// Everything that can be checked is checked before the file is touched (NODBG, register
    /// state for virtual addresses, the whole range); the file is then opened by
    /// [`DumpFile::open`] and never unlinked, even when a later read or write fails.
    fn save(
        &self,
        addr: u64,
        size: i64,
        filename: &str,
        cpu: Option<u32>,
    ) -> Result<(), MonitorError> {
        let size = u64::try_from(size)
            .map_err(|_| MonitorError::generic("Parameter 'size' expects a non-negative size"))?;
        let invalid = |why: &str| {
            MonitorError::generic(format!(
                "Invalid addr 0x{addr:016x}/size {size} specified: {why}"
            ))
        };
        if size > 0 && addr.checked_add(size - 1).is_none() {
            return Err(invalid("the range runs past the end of the address space"));
        }
        self.backend.debug_access(cpu)?;
        if size > 0 {
            self.backend
                .check_range(cpu, addr, size)
                .map_err(|e| invalid(e.desc()))?;
        }
        let mut f = DumpFile::open(filename)?;
        let mut done = 0u64;
        while done < size {
            let len = (size - done).min(SAVE_CHUNK as u64) as usize;
            let at = addr + done;
            let left = |e: &dyn std::fmt::Display| {
                MonitorError::generic(format!(
                    "{e} ('{filename}' is left with the first {done} of {size} bytes)"
                ))
            };
            let chunk = match cpu {
                None => self.backend.read_guest_phys(at, len),
                Some(c) => self.backend.read_guest_virt(c, at, len),
            };
            let chunk = match chunk {
                Ok(c) if c.len() == len => c,
                Ok(c) => {
                    return Err(left(&format!(
                        "reading guest memory at 0x{at:016x} returned {} of {len} bytes",
                        c.len()
                    )))
                }
                Err(e) => {
                    return Err(left(&format!(
                        "reading guest memory at 0x{at:016x} failed: {}",
                        e.desc()
                    )))
                }
            };
            f.write_all(&chunk)
                .map_err(|e| left(&format!("Error writing to '{filename}': {e}")))?;
            done += len as u64;
        }
        Ok(())
    }
}

fn version_value() -> Value {
    let (major, minor, micro) = QEMU_COMPAT_VERSION;
    json!({
        "qemu": {"major": major, "minor": minor, "micro": micro},
        "package": format!("sevm {}", env!("CARGO_PKG_VERSION")),
    })
}
