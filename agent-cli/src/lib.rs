//! The `agent` command-line tool: run and serve agents on any backend.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod demo;
