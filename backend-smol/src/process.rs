//! [`SmolSpawner`]: child processes with piped stdio on smol's `async-process`.
//!
//! ```
//! use agent_core::process::{ProcessCommand, ProcessSpawner};
//! use backend_smol::SmolSpawner;
//!
//! let child = SmolSpawner::new().spawn(&ProcessCommand::new("definitely-not-a-program-xyz"));
//! assert!(child.is_err(), "a missing program is an error, not a panic");
//! ```

use std::io;
use std::sync::Mutex;

use agent_core::process::{ChildProcess, ProcessCommand, ProcessControl, ProcessSpawner};

/// The core's [`ProcessSpawner`] on smol: [`smol::process`] (the `async-process` crate), its
/// pipes driven by async-io's reactor, the child killed and reaped when its
/// [`ProcessControl`] is dropped. Needs no executor of its own: the pipes make progress
/// under any executor, including `block_on`.
#[derive(Debug, Clone, Default)]
pub struct SmolSpawner {
    _private: (),
}

impl SmolSpawner {
    /// A spawner.
    pub fn new() -> Self {
        SmolSpawner { _private: () }
    }
}

impl ProcessSpawner for SmolSpawner {
    fn spawn(&self, command: &ProcessCommand) -> io::Result<ChildProcess> {
        let mut cmd = smol::process::Command::new(&command.program);
        cmd.args(&command.args)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(smol::process::Stdio::piped())
            .stdout(smol::process::Stdio::piped())
            .stderr(smol::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &command.current_dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn()?;
        let missing = || io::Error::other("the child's pipes were not set up");
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let stderr = child.stderr.take().ok_or_else(missing)?;
        Ok(ChildProcess {
            stdin: Box::pin(stdin),
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            control: Box::new(SmolChild {
                id: child.id(),
                child: Mutex::new(child),
            }),
        })
    }
}

/// An `async-process` child; dropping it kills the child (`kill_on_drop`), async-process
/// reaps it.
struct SmolChild {
    id: u32,
    child: Mutex<smol::process::Child>,
}

impl ProcessControl for SmolChild {
    fn id(&self) -> Option<u32> {
        Some(self.id)
    }

    fn kill(&self) -> io::Result<()> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        match child.try_status() {
            Ok(Some(_)) => Ok(()),
            _ => child.kill(),
        }
    }
}
