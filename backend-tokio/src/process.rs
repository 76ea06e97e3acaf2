//! [`TokioSpawner`]: child processes with piped stdio on tokio's reactor.
//!
//! ```
//! use agent_core::process::{ProcessCommand, ProcessSpawner};
//! use backend_tokio::TokioSpawner;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let spawner = TokioSpawner::current();
//! let child = spawner.spawn(&ProcessCommand::new("definitely-not-a-program-xyz"));
//! assert!(child.is_err(), "a missing program is an error, not a panic");
//! # }
//! ```

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use agent_core::process::{ChildProcess, ProcessCommand, ProcessControl, ProcessSpawner};
use tokio::io::ReadBuf;
use tokio::runtime::Handle;

/// The core's [`ProcessSpawner`] on a tokio runtime: [`tokio::process`], its pipes read and
/// written through tokio's reactor, the child killed (and reaped by tokio) when its
/// [`ProcessControl`] is dropped.
///
/// The pipes belong to the runtime of the handle given at construction; they make progress
/// while that runtime is driven (always on a multi-thread runtime; inside `block_on` on a
/// current-thread one).
#[derive(Debug, Clone)]
pub struct TokioSpawner {
    handle: Handle,
}

impl TokioSpawner {
    /// A spawner on the runtime this code runs in.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like [`Handle::current`].
    #[track_caller]
    pub fn current() -> Self {
        TokioSpawner::from_handle(Handle::current())
    }

    /// A spawner on `handle`'s runtime, usable from any thread.
    pub fn from_handle(handle: Handle) -> Self {
        TokioSpawner { handle }
    }
}

impl ProcessSpawner for TokioSpawner {
    fn spawn(&self, command: &ProcessCommand) -> io::Result<ChildProcess> {
        // The pipes register with the reactor of the runtime entered here.
        let _enter = self.handle.enter();
        let mut cmd = tokio::process::Command::new(&command.program);
        cmd.args(&command.args)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
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
            stdin: Box::pin(Compat(stdin)),
            stdout: Box::pin(Compat(stdout)),
            stderr: Box::pin(Compat(stderr)),
            control: Box::new(TokioChild {
                id: child.id(),
                child: Mutex::new(child),
            }),
        })
    }
}

/// A tokio child; dropping it kills the child (`kill_on_drop`), tokio reaps it.
struct TokioChild {
    id: Option<u32>,
    child: Mutex<tokio::process::Child>,
}

impl ProcessControl for TokioChild {
    fn id(&self) -> Option<u32> {
        self.id
    }

    fn kill(&self) -> io::Result<()> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        match child.start_kill() {
            // Already exited (and reaped): nothing to kill.
            Err(err) if err.kind() == io::ErrorKind::InvalidInput => Ok(()),
            other => other,
        }
    }
}

/// A tokio pipe seen through the `futures-io` traits.
struct Compat<T>(T);

impl<T: tokio::io::AsyncRead + Unpin> futures_io::AsyncRead for Compat<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut read = ReadBuf::new(buf);
        match Pin::new(&mut self.0).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(read.filled().len())),
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> futures_io::AsyncWrite for Compat<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
