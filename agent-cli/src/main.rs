//! The `agent` binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    agent_cli::app::main(agent_cli::cli::Cli::parse())
}
