//! The backends' dependency-rule tests (DESIGN.md, Layout) share this: the crate names in
//! `cargo tree -p <package> -e normal`, the features of a crate in it, and assertions over
//! them (`test_support::dependencies`).

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

/// The features of `krate` enabled in `package`'s normal tree (empty when it is absent).
pub fn enabled_features(package: &str, krate: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal,features",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree could not be started");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let prefix = format!("{krate} feature \"");
    let mut features: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix)?.strip_suffix('"'))
        .map(str::to_string)
        .collect();
    features.sort();
    features.dedup();
    features
}

/// Assert that tokio, if it is in `package`'s normal tree at all, comes without a runtime:
/// only its `sync` feature (channels, as hyper 1.x needs them) and the empty `default`.
/// No `rt`, `rt-multi-thread`, `net`, `time`, `io-util`, `process`, `fs`, `signal`.
pub fn assert_tokio_without_runtime(package: &str) {
    let features = enabled_features(package, "tokio");
    let runtime: Vec<&String> = features
        .iter()
        .filter(|f| !matches!(f.as_str(), "sync" | "default"))
        .collect();
    assert!(
        runtime.is_empty(),
        "{package} enables tokio features beyond `sync`: {runtime:?} (all: {features:?}); \
         DESIGN.md allows tokio only without a runtime"
    );
}
