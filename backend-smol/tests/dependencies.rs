//! The smol backend pulls no other runtime: no async-std, and tokio only with its `sync`
//! feature (hyper 1.x's channels: no runtime, no reactor, no timer), in
//! `cargo tree -p backend-smol -e normal,features`.

use test_support::dependencies;

#[test]
fn no_other_runtime_among_the_normal_dependencies() {
    dependencies::assert_tree("backend-smol", "async-executor", &["async-std", "surf"]);
    dependencies::assert_tree("backend-smol", "hyper", &[]);
    dependencies::assert_tokio_without_runtime("backend-smol");
    dependencies::assert_tokio_without_runtime("agent-hyper");
}
