//! Runtime-agnostic streaming LLM agent core.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod error;
pub mod event;
pub mod http;
pub mod model;
pub mod policy;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod sse;
pub mod tool;
