//! [`ThreadSpawner`]: child processes with piped stdio, each pipe served by a thread.
//!
//! ```
//! use agent_core::process::{ProcessCommand, ProcessSpawner};
//! use backend_blocking::ThreadSpawner;
//!
//! let child = ThreadSpawner::new().spawn(&ProcessCommand::new("definitely-not-a-program-xyz"));
//! assert!(child.is_err(), "a missing program is an error, not a panic");
//! ```

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use agent_core::process::{ChildProcess, ProcessCommand, ProcessControl, ProcessSpawner};
use futures_channel::mpsc;
use futures_core::Stream;
use futures_util::SinkExt;

/// Bytes read from a pipe per chunk handed to the reader.
const PIPE_CHUNK: usize = 8 * 1024;

/// Chunks buffered between a pipe's thread and its reader or writer (each way bounded, so a
/// slow side holds the other back instead of growing a queue).
const PIPE_CHANNEL_CAPACITY: usize = 4;

/// The core's [`ProcessSpawner`] on plain threads: [`std::process`], with one thread per
/// pipe doing the blocking reads and writes and a bounded channel between it and the
/// `futures-io` object the caller polls. No async runtime is involved; whatever polls the
/// pipes (the core's `block_on`, any executor) is woken by the channel.
///
/// Dropping the [`ProcessControl`] kills and reaps the child; its pipe threads then see the
/// pipes close and exit.
#[derive(Debug, Clone, Default)]
pub struct ThreadSpawner {
    _private: (),
}

impl ThreadSpawner {
    /// A spawner.
    pub fn new() -> Self {
        ThreadSpawner { _private: () }
    }
}

impl ProcessSpawner for ThreadSpawner {
    fn spawn(&self, command: &ProcessCommand) -> io::Result<ChildProcess> {
        let mut cmd = std::process::Command::new(&command.program);
        cmd.args(&command.args)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(dir) = &command.current_dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn()?;
        let missing = || io::Error::other("the child's pipes were not set up");
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let stderr = child.stderr.take().ok_or_else(missing)?;
        let control = ThreadChild {
            id: child.id(),
            child: Mutex::new(child),
        };
        // From here on `control` kills the child if a thread cannot be started.
        let stdin = pipe_writer(stdin)?;
        let stdout = pipe_reader(stdout, "stdout")?;
        let stderr = pipe_reader(stderr, "stderr")?;
        Ok(ChildProcess {
            stdin: Box::pin(stdin),
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            control: Box::new(control),
        })
    }
}

/// A `std` child; dropping it kills and reaps it.
struct ThreadChild {
    id: u32,
    child: Mutex<std::process::Child>,
}

impl ProcessControl for ThreadChild {
    fn id(&self) -> Option<u32> {
        Some(self.id)
    }

    fn kill(&self) -> io::Result<()> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        match child.try_wait() {
            Ok(Some(_)) => Ok(()),
            _ => child.kill(),
        }
    }
}

impl Drop for ThreadChild {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
        }
        // After SIGKILL the wait is immediate; it reaps the child (no zombie).
        let _ = child.wait();
    }
}

/// Start the thread that reads `pipe` and hands its chunks over.
fn pipe_reader(mut pipe: impl Read + Send + 'static, name: &str) -> io::Result<PipeReader> {
    let (mut tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(PIPE_CHANNEL_CAPACITY);
    std::thread::Builder::new()
        .name(format!("agent-process-{name}"))
        .spawn(move || {
            let mut buf = vec![0u8; PIPE_CHUNK];
            loop {
                let item = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => Ok(buf[..n].to_vec()),
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => Err(err),
                };
                let failed = item.is_err();
                // The reader is gone: stop reading (the pipe closes with this thread).
                if agent_core::runtime::block_on(tx.send(item)).is_err() || failed {
                    break;
                }
            }
        })?;
    Ok(PipeReader {
        rx,
        chunk: Vec::new(),
        pos: 0,
        done: false,
    })
}

/// Start the thread that writes what it is handed to `pipe`.
fn pipe_writer(mut pipe: impl Write + Send + 'static) -> io::Result<PipeWriter> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(PIPE_CHANNEL_CAPACITY);
    std::thread::Builder::new()
        .name("agent-process-stdin".into())
        .spawn(move || {
            use futures_util::StreamExt;
            while let Some(chunk) = agent_core::runtime::block_on(rx.next()) {
                if pipe.write_all(&chunk).and_then(|()| pipe.flush()).is_err() {
                    // The child closed stdin or exited; dropping `rx` fails later writes.
                    break;
                }
            }
        })?;
    Ok(PipeWriter { tx })
}

/// A pipe read by a thread, as a `futures-io` reader.
struct PipeReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    done: bool,
}

impl futures_io::AsyncRead for PipeReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if this.pos < this.chunk.len() {
                let n = buf.len().min(this.chunk.len() - this.pos);
                buf[..n].copy_from_slice(&this.chunk[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(n));
            }
            if this.done || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            match Pin::new(&mut this.rx).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.chunk = chunk;
                    this.pos = 0;
                }
                Poll::Ready(Some(Err(err))) => {
                    this.done = true;
                    return Poll::Ready(Err(err));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(Ok(0));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A pipe written by a thread, as a `futures-io` writer. A write is accepted once the
/// thread's channel has room; the thread writes and flushes each chunk in order.
struct PipeWriter {
    tx: mpsc::Sender<Vec<u8>>,
}

fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the child's stdin is closed")
}

impl futures_io::AsyncWrite for PipeWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.tx.poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Err(broken_pipe())),
            Poll::Pending => return Poll::Pending,
        }
        match self.tx.start_send(buf.to_vec()) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(_) => Poll::Ready(Err(broken_pipe())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Every accepted chunk is written and flushed by the thread, in order.
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx.close_channel();
        Poll::Ready(Ok(()))
    }
}
