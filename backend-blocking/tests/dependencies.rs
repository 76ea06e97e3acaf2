//! The crate pulls no async runtime or executor: `cargo tree -p backend-blocking -e normal`.

use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "async-std",
    "async-executor",
    "async-global-executor",
    "async-io",
    "smol",
    "futures-executor",
];

#[test]
fn no_async_runtime_in_the_normal_dependency_tree() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "backend-blocking",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).unwrap();
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"ureq"), "unexpected tree:\n{tree}");
    for name in FORBIDDEN {
        assert!(
            !crates.contains(name),
            "{name} is in the normal dependency tree:\n{tree}"
        );
    }
}
