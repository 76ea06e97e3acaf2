//! The `agent` command-line tool: run and serve streaming agents on tokio, smol or threads.
//!
//! The binary is a thin layer over this library, which the tests and the book use too:
//!
//! ```
//! use clap::Parser;
//! use agent_cli::cli::{Cli, RuntimeChoice};
//!
//! let cli = Cli::parse_from(["agent", "--runtime", "smol", "What", "is", "2+2?"]);
//! assert_eq!(cli.model.runtime, RuntimeChoice::Smol);
//! assert_eq!(cli.prompt.join(" "), "What is 2+2?");
//! ```
//!
//! * [`cli`]: the arguments (clap);
//! * [`setup`]: which model the flags select, and the agent built from it;
//! * [`demo`]: the built-in demo model and its tools;
//! * [`drivers`]: one driver per runtime, shaped alike;
//! * [`mcp`]: `--mcp` / `--mcp-url`, MCP servers' tools for the agent;
//! * [`render`]: printing a run, flushed after every delta;
//! * [`errors`]: messages for the failures users meet;
//! * [`app`]: the commands.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod demo;
pub mod drivers;
pub mod errors;
pub mod mcp;
pub mod render;
pub mod setup;

/// The book's chapters and the workspace README, compiled and run as doctests so that their
/// code cannot drift from the libraries.
#[cfg(doctest)]
mod book {
    #[doc = include_str!("../../README.md")]
    struct Readme;
    #[doc = include_str!("../../docs/src/agent.md")]
    struct AgentChapter;
    #[doc = include_str!("../../docs/src/events.md")]
    struct EventsChapter;
    #[doc = include_str!("../../docs/src/structured-output.md")]
    struct StructuredOutputChapter;
    #[doc = include_str!("../../docs/src/anthropic.md")]
    struct AnthropicChapter;
    #[doc = include_str!("../../docs/src/approvals.md")]
    struct ApprovalsChapter;
    #[doc = include_str!("../../docs/src/http-api.md")]
    struct HttpApiChapter;
    #[doc = include_str!("../../docs/src/conformance-guide.md")]
    struct ConformanceChapter;
}
