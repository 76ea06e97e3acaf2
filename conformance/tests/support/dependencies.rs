//! The backends' dependency-rule tests (DESIGN.md, Layout) share this: the crate names in
//! `cargo tree -p <package> -e normal`, and an assertion over them. Each backend includes it
//! from its `tests/dependencies.rs` with `#[path = "../../conformance/tests/support/dependencies.rs"]`.

use std::process::Command;

/// The names of the crates in `package`'s normal dependency tree (the package included).
pub fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "tree", "-p", package, "-e", "normal", "--prefix", "none", "--format", "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree could not be started");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Assert that `package`'s normal tree holds `expected` and no crate named in `forbidden`
/// (a name ending in `*` forbids every crate with that prefix).
pub fn assert_tree(package: &str, expected: &str, forbidden: &[&str]) {
    let crates = normal_dependencies(package);
    assert!(
        crates.iter().any(|c| c == expected),
        "{expected} should be in the tree of {package}: {crates:?}"
    );
    let found: Vec<&String> = crates
        .iter()
        .filter(|c| {
            forbidden.iter().any(|f| match f.strip_suffix('*') {
                Some(prefix) => c.starts_with(prefix),
                None => c.as_str() == *f,
            })
        })
        .collect();
    assert!(
        found.is_empty(),
        "{package} pulls in forbidden crates: {found:?}"
    );
}
