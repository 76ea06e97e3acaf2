//! The crate pulls no async runtime or executor: `cargo tree -p backend-blocking -e normal`.

use test_support::dependencies;

#[test]
fn no_async_runtime_in_the_normal_dependency_tree() {
    dependencies::assert_tree(
        "backend-blocking",
        "ureq",
        &[
            "tokio",
            "async-std",
            "async-executor",
            "async-global-executor",
            "async-io",
            "smol",
            "futures-executor",
        ],
    );
}
