//! [`Backend`](crate::Backend) implementations for this workspace's own backends, used by
//! their test suites and by the `conformance-report` binary (feature `backends`, on by
//! default).
//!
//! Each backend crate's engineer adds one line here: `pub mod tokio;`, `pub mod smol;`,
//! `pub mod blocking;`.
#[cfg(feature = "backends")]
pub mod blocking;
#[cfg(feature = "backends")]
pub mod smol;
#[cfg(feature = "backends")]
pub mod tokio;
