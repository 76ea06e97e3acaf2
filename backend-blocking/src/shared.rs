//! [`Shared`]: the state the acceptor, the waiting thread and the connection threads share,
//! and the hand-offs between them (to the waiting thread, to a connection thread, refusal).

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agent_core::server::{AgentService, ApiError};
use agent_http1::HeadWriter;

use crate::connection::Connection;
use crate::options::ThreadServerOptions;
use crate::waiting::Waiting;

/// State shared by the acceptor and the connection threads.
pub(crate) struct Shared {
    pub(crate) service: AgentService,
    pub(crate) options: ThreadServerOptions,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) connections: Mutex<usize>,
    pub(crate) connections_changed: Condvar,
    /// Connections held by the waiting thread (as of its last pass, plus arrivals since).
    pub(crate) waiting: AtomicUsize,
    pub(crate) to_waiting: Mutex<Option<Sender<Waiting>>>,
    /// Written (one byte, non-blocking) after every arrival for the waiting thread and at
    /// shutdown, so that its `poll` returns at once.
    pub(crate) wake_waiting: UnixStream,
    pub(crate) stop_requested: Mutex<bool>,
    pub(crate) stop_changed: Condvar,
}

impl Shared {
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub(crate) fn connections(&self) -> MutexGuard<'_, usize> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the waiting thread's `poll` return (a full wake socket already will).
    pub(crate) fn wake_waiting_thread(&self) {
        let _ = (&self.wake_waiting).write(&[1]);
    }

    pub(crate) fn set_waiting(&self, n: usize) {
        self.waiting.store(n, Ordering::Release);
    }

    /// Give `stream` to the waiting thread, to wait for a head until `deadline`; `false`
    /// (and the stream is dropped) when it holds `max_waiting_connections` already.
    pub(crate) fn to_waiting(
        &self,
        stream: TcpStream,
        buf: Vec<u8>,
        deadline: Instant,
    ) -> Result<(), TcpStream> {
        let held = self.waiting.load(Ordering::Acquire);
        if held >= self.options.max_waiting_connections {
            return Err(stream);
        }
        let sender = self.to_waiting.lock().unwrap_or_else(|p| p.into_inner());
        match sender.as_ref() {
            Some(sender) => {
                self.waiting.fetch_add(1, Ordering::AcqRel);
                let sent = sender
                    .send(Waiting {
                        stream,
                        buf,
                        deadline,
                    })
                    .map_err(|unsent| unsent.0.stream);
                self.wake_waiting_thread();
                sent
            }
            None => Err(stream),
        }
    }
}

/// A kept-alive connection whose response was written and which sent nothing more: back to
/// the waiting thread, its connection thread ends.
pub(crate) fn park(shared: &Shared, stream: TcpStream) {
    let deadline = Instant::now() + shared.service.config().head_read_timeout;
    if shared.to_waiting(stream, Vec::new(), deadline).is_err() {
        tracing::debug!("too many waiting connections; closing a kept-alive one");
    }
}

/// Serve a connection whose head is complete on a connection thread of its own, or answer
/// `503` when `max_connections` are being served.
pub(crate) fn start_connection(shared: &Arc<Shared>, waiting: Waiting) {
    {
        let mut open = shared.connections();
        if *open >= shared.options.max_connections {
            drop(open);
            refuse(waiting.stream);
            return;
        }
        *open += 1;
    }
    let slot = ConnectionSlot(shared.clone());
    let connection_shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("agent-server-conn".into())
        .spawn(move || {
            let _slot = slot;
            Connection::resume(waiting, connection_shared).serve();
        });
    if let Err(err) = spawned {
        // The closure (and with it the slot and the stream) was dropped.
        tracing::warn!(error = %err, "could not start a connection thread");
    }
}

/// Counts a connection thread; decrements when the thread ends (even by a panic).
struct ConnectionSlot(Arc<Shared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        *self.0.connections() -= 1;
        self.0.connections_changed.notify_all();
    }
}

/// Answer a connection beyond the limit with a 503 and close it.
pub(crate) fn refuse(mut stream: TcpStream) {
    let error = ApiError {
        status: 503,
        code: "too_many_connections",
        message: "the server has too many open connections; try again shortly".into(),
    };
    let body = error.body();
    let mut out = HeadWriter::response(503)
        .header("content-type", "application/json")
        .header("content-length", &body.len().to_string())
        .header("connection", "close")
        .finish();
    out.extend_from_slice(&body);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&out);
    let _ = stream.flush();
}
