//! Test support shared by this workspace's backends (`publish = false`): what their test
//! suites have in common, written once instead of copied into each backend's `tests/`.
//!
//! * [`backends`]: the [`conformance::Backend`] implementations of backend-tokio (two
//!   flavours), backend-smol (two flavours) and backend-blocking, which their
//!   `tests/conformance.rs` hand to `conformance::suite!` and the `conformance-report`
//!   binary runs side by side;
//! * [`reliability`]: flooding and holding models, a client that stops reading, a
//!   self-signed TLS server, a tracing capture;
//! * [`stores`]: the memory, SQLite and PostgreSQL fixtures of the store cases;
//! * [`dependencies`]: the dependency-rule checks of DESIGN.md (crate names and features in
//!   `cargo tree`).
//!
//! ```
//! use conformance::Backend;
//! let backend = test_support::backends::blocking::Threads;
//! assert_eq!(backend.name(), "threads");
//! ```
#![forbid(unsafe_code)]

use std::time::Duration;

pub mod backends;
pub mod dependencies;
// Test helpers named for what they do; their docs are the tests that use them.
#[allow(missing_docs)]
pub mod reliability;
pub mod stores;

/// How long any wait of the support code may take before the test fails.
pub const WATCHDOG: Duration = Duration::from_secs(10);
