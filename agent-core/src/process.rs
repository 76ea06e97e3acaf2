//! Child processes with piped stdio, started through a backend without blocking its executor.
//!
//! Some tools live in another program: an MCP server over stdio, a language server, a
//! helper script. [`ProcessSpawner`] is the one service the core needs for them: start a
//! [`ProcessCommand`] with stdin, stdout and stderr piped, and hand back the pipes as
//! [`futures_io`] `AsyncWrite` / `AsyncRead` objects that make progress on the backend's own
//! I/O (tokio's reactor, smol's async-io, or a thread per pipe for plain threads), so that
//! reading them never blocks an executor thread.
//!
//! ```
//! use agent_core::process::ProcessCommand;
//!
//! let command = ProcessCommand::new("python3")
//!     .arg("-m")
//!     .arg("my_mcp_server")
//!     .env("LOG_LEVEL", "debug");
//! assert_eq!(command.program, "python3");
//! assert_eq!(command.args, ["-m", "my_mcp_server"]);
//! ```
//!
//! Each backend crate has a spawner: `backend_tokio::TokioSpawner`,
//! `backend_smol::SmolSpawner` and `backend_blocking::ThreadSpawner`.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

pub use futures_io::{AsyncRead, AsyncWrite};

/// What to start: a program, its arguments, extra environment variables, a working directory.
///
/// The program is looked up in `PATH` as by [`std::process::Command`]; nothing goes
/// through a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessCommand {
    /// The program (a path, or a name looked up in `PATH`).
    pub program: String,
    /// Its arguments, in order.
    pub args: Vec<String>,
    /// Environment variables set on top of the inherited environment.
    pub env: Vec<(String, String)>,
    /// The working directory; `None` for the current one.
    pub current_dir: Option<PathBuf>,
}

impl ProcessCommand {
    /// A command running `program` with no arguments.
    pub fn new(program: impl Into<String>) -> Self {
        ProcessCommand {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            current_dir: None,
        }
    }

    /// Add an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Set an environment variable for the child.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Run the child in `dir`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }
}

impl fmt::Display for ProcessCommand {
    /// The program and its arguments separated by spaces (for messages; not shell-quoted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// The child's stdout or stderr.
pub type ProcessReader = Pin<Box<dyn AsyncRead + Send + 'static>>;

/// The child's stdin.
pub type ProcessWriter = Pin<Box<dyn AsyncWrite + Send + 'static>>;

/// Control over a running child.
///
/// **Dropping it kills the child** (if it still runs) and arranges for it to be reaped, so
/// a dropped [`ChildProcess`] never leaves a running program or a zombie behind. Dropping
/// must not block for long: at most the time to send the kill signal and reap the child.
pub trait ProcessControl: Send + Sync + 'static {
    /// The OS process id, while known.
    fn id(&self) -> Option<u32>;

    /// Ask the OS to kill the child now. Killing a child that already exited is not an error.
    fn kill(&self) -> io::Result<()>;
}

/// A started child: its three pipes and its [`ProcessControl`].
///
/// The pipes and the control may be dropped independently; dropping the control kills the
/// child, which closes its ends of the pipes (reads then end, writes fail).
pub struct ChildProcess {
    /// Writes to the child's stdin.
    pub stdin: ProcessWriter,
    /// Reads the child's stdout.
    pub stdout: ProcessReader,
    /// Reads the child's stderr.
    pub stderr: ProcessReader,
    /// Kills the child when dropped.
    pub control: Box<dyn ProcessControl>,
}

impl fmt::Debug for ChildProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildProcess")
            .field("id", &self.control.id())
            .finish_non_exhaustive()
    }
}

/// Starts child processes with piped stdio for a backend.
///
/// The contract every implementation keeps:
///
/// * `spawn` starts the child with stdin, stdout and stderr piped and returns at once (it
///   does not wait for the child to do anything). A program that cannot be started (not
///   found, not executable) is an [`io::Error`], never a panic.
/// * The pipes are non-blocking for the executor: a read or write that cannot complete
///   returns `Pending` and wakes the task when it can, through the backend's own I/O.
///   Reads end with `Ok(0)` when the child closes the pipe (or exits).
/// * Dropping [`ChildProcess::control`] kills the child and reaps it (see
///   [`ProcessControl`]).
/// * Where the backend needs a runtime context (tokio's reactor), the spawner carries it:
///   `spawn` works from any thread.
pub trait ProcessSpawner: Send + Sync + fmt::Debug + 'static {
    /// Start `command` with piped stdio.
    fn spawn(&self, command: &ProcessCommand) -> io::Result<ChildProcess>;
}

/// A spawner shared by the clients that start processes.
pub type SharedProcessSpawner = Arc<dyn ProcessSpawner>;
