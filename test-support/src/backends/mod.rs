//! [`Backend`](conformance::Backend) implementations for this workspace's own backends,
//! used by their test suites and by the `conformance-report` binary. They live here, not in
//! the published `conformance` crate, so that a third party's backend does not pull in
//! tokio, smol and ureq.
pub mod blocking;
pub mod smol;
pub mod tokio;
