//! The smol backend pulls no other runtime: no tokio (not even hyper's `tokio/sync`), no
//! async-std, in `cargo tree -p backend-smol -e normal`.

use std::process::Command;

#[test]
fn no_tokio_or_async_std_among_the_normal_dependencies() {
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
            "backend-smol",
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
        tree.lines().any(|l| l.starts_with("async-executor ")),
        "unexpected tree:\n{tree}"
    );
    let forbidden: Vec<&str> = tree
        .lines()
        .filter(|line| {
            ["tokio", "async-std", "hyper"]
                .iter()
                .any(|name| line.starts_with(&format!("{name} ")))
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "other runtimes in the dependency tree: {forbidden:?}"
    );
}
