//! Device options, as `sevm run` takes them (Cloud Hypervisor's `key=value,...` spelling):
//! `--disk path=FILE[,readonly=on|off][,id=ID]`, `--net tap=NAME[,mac=MAC]`,
//! `--vsock cid=N,uds=PATH`. Every error names the option and the key.

use std::path::PathBuf;

/// A bad device option.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{opt} {spec:?}: {what}")]
pub struct DeviceSpecError {
    /// The option (`--disk`, ...).
    pub opt: &'static str,
    /// What was given.
    pub spec: String,
    /// What is wrong.
    pub what: String,
}

/// One virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Raw image.
    pub path: PathBuf,
    /// Refuse guest writes.
    pub readonly: bool,
    /// GET_ID string (at most 20 bytes).
    pub id: Option<String>,
}

/// One virtio-net card on a TAP device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The TAP interface's name.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: Option<[u8; 6]>,
}

/// The virtio-vsock device (Firecracker's hybrid model over Unix sockets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's CID (3 or more).
    pub cid: u32,
    /// The host-side Unix socket path.
    pub uds: PathBuf,
}

fn pairs<'a>(
    opt: &'static str,
    spec: &'a str,
    keys: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, DeviceSpecError> {
    let err = |what: String| DeviceSpecError {
        opt,
        spec: spec.to_owned(),
        what,
    };
    let mut out: Vec<(&str, &str)> = Vec::new();
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| err(format!("`{part}` is not key=value")))?;
        if !keys.contains(&k) {
            return Err(err(format!(
                "unknown key `{k}` (expected one of: {})",
                keys.join(", ")
            )));
        }
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(err(format!("key `{k}` given twice")));
        }
        if v.is_empty() {
            return Err(err(format!("key `{k}` is empty")));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn on_off(opt: &'static str, spec: &str, key: &str, v: &str) -> Result<bool, DeviceSpecError> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(DeviceSpecError {
            opt,
            spec: spec.to_owned(),
            what: format!("{key}={v}: expected on or off"),
        }),
    }
}

fn get<'a>(p: &[(&str, &'a str)], k: &str) -> Option<&'a str> {
    p.iter().find(|(key, _)| *key == k).map(|(_, v)| *v)
}

/// Parses `--disk`.
pub fn parse_disk(spec: &str) -> Result<DiskConfig, DeviceSpecError> {
    const O: &str = "--disk";
    let p = pairs(O, spec, &["path", "readonly", "id"])?;
    let path = get(&p, "path").ok_or_else(|| DeviceSpecError {
        opt: O,
        spec: spec.to_owned(),
        what: "path=FILE is required".into(),
    })?;
    let readonly = match get(&p, "readonly") {
        Some(v) => on_off(O, spec, "readonly", v)?,
        None => false,
    };
    let id = get(&p, "id").map(str::to_owned);
    if id.as_ref().is_some_and(|i| i.len() > 20) {
        return Err(DeviceSpecError {
            opt: O,
            spec: spec.to_owned(),
            what: "id is longer than virtio-blk's 20 bytes".into(),
        });
    }
    Ok(DiskConfig {
        path: PathBuf::from(path),
        readonly,
        id,
    })
}

/// Parses a MAC address `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Parses `--net`.
pub fn parse_net(spec: &str) -> Result<NetConfig, DeviceSpecError> {
    const O: &str = "--net";
    let p = pairs(O, spec, &["tap", "mac"])?;
    let err = |what: &str| DeviceSpecError {
        opt: O,
        spec: spec.to_owned(),
        what: what.into(),
    };
    let tap = get(&p, "tap").ok_or_else(|| err("tap=NAME is required"))?;
    // IFNAMSIZ is 16 including the NUL.
    if tap.len() > 15 {
        return Err(err("tap name is longer than 15 bytes (IFNAMSIZ)"));
    }
    let mac = match get(&p, "mac") {
        Some(m) => {
            let mac =
                parse_mac(m).ok_or_else(|| err("mac: expected six hex bytes aa:bb:cc:dd:ee:ff"))?;
            if mac[0] & 1 == 1 {
                return Err(err(
                    "mac is a multicast address (lowest bit of the first byte set)",
                ));
            }
            Some(mac)
        }
        None => None,
    };
    Ok(NetConfig {
        tap: tap.to_owned(),
        mac,
    })
}

/// Parses `--vsock`.
pub fn parse_vsock(spec: &str) -> Result<VsockConfig, DeviceSpecError> {
    const O: &str = "--vsock";
    let p = pairs(O, spec, &["cid", "uds"])?;
    let err = |what: &str| DeviceSpecError {
        opt: O,
        spec: spec.to_owned(),
        what: what.into(),
    };
    let cid = get(&p, "cid").ok_or_else(|| err("cid=N is required"))?;
    let cid: u32 = cid
        .parse()
        .map_err(|_| err("cid: expected a decimal number"))?;
    // 0, 1 and 2 are reserved (hypervisor, local, host); u32::MAX is VMADDR_CID_ANY.
    if cid < 3 || cid == u32::MAX {
        return Err(err(
            "cid must be 3 or more (0-2 are reserved) and not 0xffffffff",
        ));
    }
    let uds = get(&p, "uds").ok_or_else(|| err("uds=PATH is required"))?;
    Ok(VsockConfig {
        cid,
        uds: PathBuf::from(uds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_specs() {
        assert_eq!(
            parse_disk("path=/d.img,readonly=on,id=root").unwrap(),
            DiskConfig {
                path: "/d.img".into(),
                readonly: true,
                id: Some("root".into())
            }
        );
        assert!(!parse_disk("path=x").unwrap().readonly);
        for (bad, says) in [
            ("readonly=on", "path=FILE is required"),
            ("path=x,readonly=maybe", "readonly=maybe"),
            ("path=x,path=y", "given twice"),
            ("path=x,size=5", "unknown key `size`"),
            ("path", "not key=value"),
            ("path=", "is empty"),
            ("path=x,id=123456789012345678901", "20 bytes"),
        ] {
            let e = parse_disk(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.starts_with("--disk"), "{bad}: {e}");
        }
    }

    #[test]
    fn net_and_vsock_specs() {
        assert_eq!(
            parse_net("tap=tap0,mac=52:54:00:12:34:56").unwrap().mac,
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        for bad in [
            "mac=52:54:00:12:34:56",
            "tap=t,mac=52:54:00:12:34",
            "tap=t,mac=01:00:00:00:00:00",
            "tap=0123456789abcdef",
        ] {
            assert!(parse_net(bad).unwrap_err().to_string().starts_with("--net"));
        }
        assert_eq!(
            parse_vsock("cid=3,uds=/tmp/v.sock").unwrap(),
            VsockConfig {
                cid: 3,
                uds: "/tmp/v.sock".into()
            }
        );
        for bad in ["cid=2,uds=/x", "cid=x,uds=/x", "uds=/x", "cid=4"] {
            assert!(parse_vsock(bad)
                .unwrap_err()
                .to_string()
                .starts_with("--vsock"));
        }
    }
}
