//! The smol backend pulls no other runtime: no tokio (not even hyper's `tokio/sync`), no
//! async-std, in `cargo tree -p backend-smol -e normal`.

#[path = "../../conformance/tests/support/dependencies.rs"]
mod dependencies;

#[test]
fn no_tokio_or_async_std_among_the_normal_dependencies() {
    dependencies::assert_tree(
        "backend-smol",
        "async-executor",
        &["tokio", "async-std", "hyper"],
    );
}
