//! `sevm run --paused`: the owner reads the measurement, builds a secret with `sevm owner
//! secret`, and sevm injects it before LAUNCH_FINISH; the guest reads it via the C-bit map.

#[path = "sev_common/mod.rs"]
mod common;

use common::*;

#[test]
fn paused_launch_takes_the_owners_secret_from_stdin() {
    let Some((t, plat)) = kvm_plat("paused_launch_takes_the_owners_secret_from_stdin") else {
        return;
    };
    let d = t.path();
    let chain = export_chain(&plat, d);
    let extra = owner_session(d, "own", &chain, "1");
    let mut child = Paused::spawn(
        Run::guest("secret-reader")
            .flag("--paused")
            .sev(1, &extra)
            .platform(&plat)
            .opt("--timeout", "60")
            .command(),
    );
    let blob = child.measurement();
    let secret = d.join("secret.bin");
    std::fs::write(&secret, b"0123456789abcdef-the-disk-passphrase").unwrap();
    let guid = "736869e5-84f0-4973-92ec-06879ce3da0b";
    let (hdr, payload) = (d.join("hdr.bin"), d.join("payload.bin"));
    let spec = format!("{guid}:{}", secret.display());
    let o = sevm(&owner_secret_args(d, "own", &blob, &spec, &hdr, &payload));
    assert!(o.status.success(), "owner secret: {:?}", text(&o));
    let seen = String::from_utf8_lossy(&child.before).into_owned();
    let end = child.inject(&hdr, &payload);
    let out = String::from_utf8_lossy(&end.stdout);
    let rest = String::from_utf8_lossy(&end.stderr);
    assert_eq!(end.status.code(), Some(0), "{out}\n{seen}{rest}");
    assert!(rest.contains("secret injected"), "{rest}");
    let want = hex::encode(openssl::sha::sha256(
        b"0123456789abcdef-the-disk-passphrase",
    ));
    assert!(
        out.contains(&format!("secret entry {guid} len=00000024 sha256={want}")),
        "{out}"
    );
}
