//! The conformance suite every backend runs (being written).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;

pub use backend::{Backend, RunningServer};
