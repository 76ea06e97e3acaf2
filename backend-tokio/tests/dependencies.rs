//! The tokio backend pulls no other runtime and no OpenSSL: no async-std, no `openssl*` or
//! native-tls crate in `cargo tree -p backend-tokio -e normal`; TLS is rustls.

use test_support::dependencies;

#[test]
fn no_async_std_or_openssl_among_the_normal_dependencies() {
    dependencies::assert_tree(
        "backend-tokio",
        "rustls",
        &["async-std", "openssl*", "native-tls"],
    );
}
