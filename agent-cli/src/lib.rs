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
pub mod render;
pub mod setup;
