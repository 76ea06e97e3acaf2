//! The tokio backend pulls no other runtime and no OpenSSL: no async-std, no `openssl*`
//! crate in `cargo tree -p backend-tokio -e normal`; TLS is rustls.

use std::process::Command;

#[test]
fn no_async_std_or_openssl_among_the_normal_dependencies() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let output = Command::new(cargo)
        .args([
            "tree",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            "backend-tokio",
            "--manifest-path",
            manifest,
        ])
        .output()
        .expect("cargo tree could not be started");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        tree.lines().any(|l| l.starts_with("rustls ")),
        "rustls is the TLS stack; unexpected tree:\n{tree}"
    );
    let forbidden: Vec<&str> = tree
        .lines()
        .filter(|line| {
            line.starts_with("async-std ")
                || line.starts_with("openssl")
                || line.starts_with("native-tls ")
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "forbidden crates in the dependency tree: {forbidden:?}"
    );
}
