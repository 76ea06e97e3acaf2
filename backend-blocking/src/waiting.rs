//! The connections of a [`ThreadServer`](crate::ThreadServer) that wait for a request head:
//! new ones, and kept-alive ones between requests. One thread holds them all on
//! non-blocking sockets (`std` only, no executor), so that idle and slow-head connections
//! take no connection thread; a connection gets one once its head is complete (or broken,
//! or over the size limit: the connection thread answers that), and gives it back when its
//! response has been written and nothing more was sent.

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use agent_http1::{HeadLimits, HeadParser};
use rustix::event::{PollFd, PollFlags, Timespec, poll};

use crate::shared::{Shared, start_connection};

/// The longest the thread waits in `poll` without a pass (deadlines and shutdown are also
/// checked on every pass; arrivals and shutdown wake it at once).
const MAX_WAIT: Duration = Duration::from_millis(100);

/// A connection waiting for (the rest of) a request head.
pub(crate) struct Waiting {
    pub(crate) stream: TcpStream,
    /// Bytes already read (the start of the head).
    pub(crate) buf: Vec<u8>,
    /// When `head_read_timeout` expires for it.
    pub(crate) deadline: Instant,
}

/// The waiting thread: receive connections from `arrivals`, read heads, hand complete
/// ones to connection threads, close those past their deadline. Between passes it sleeps
/// in `poll(2)` on its sockets and `woken` (written after each arrival), so a head is read
/// the moment its bytes arrive.
pub(crate) fn wait_for_heads(
    shared: &Arc<Shared>,
    arrivals: &Receiver<Waiting>,
    woken: &UnixStream,
) {
    let config = shared.service.config();
    let mut parser = HeadParser::new(HeadLimits {
        max_headers: config.max_headers,
        max_head_bytes: config.effective_max_head_bytes(),
    });
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        if shared.is_shutting_down() {
            // Idle connections close quietly.
            shared.set_waiting(0);
            return;
        }
        let mut progressed = false;
        loop {
            match arrivals.try_recv() {
                Ok(arrival) => {
                    if arrival.stream.set_nonblocking(true).is_ok() {
                        waiting.push(arrival);
                        progressed = true;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    shared.set_waiting(0);
                    return;
                }
            }
        }
        let now = Instant::now();
        let mut i = 0;
        while i < waiting.len() {
            let entry = &mut waiting[i];
            let mut closed = false;
            // Bounded: at most the head limit plus one read per pass.
            loop {
                match entry.stream.read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        entry.buf.extend_from_slice(&chunk[..n]);
                        progressed = true;
                        if entry.buf.len() > config.effective_max_head_bytes() {
                            break;
                        }
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                waiting.swap_remove(i);
                continue;
            }
            let ready = !entry.buf.is_empty() && {
                parser.reset();
                // A complete head, or one the connection thread must refuse (400, 431).
                !matches!(parser.parse_request(&entry.buf), Ok(None))
            };
            if ready {
                let entry = waiting.swap_remove(i);
                if entry.stream.set_nonblocking(false).is_ok() {
                    start_connection(shared, entry);
                }
                continue;
            }
            if now >= entry.deadline {
                tracing::debug!(
                    received = entry.buf.len(),
                    "no complete request head within head_read_timeout; closing"
                );
                waiting.swap_remove(i);
                continue;
            }
            i += 1;
        }
        shared.set_waiting(waiting.len());
        if !progressed {
            wait_readable(&waiting, woken, now);
        }
    }
}

/// Sleep until a waiting socket or `woken` is readable, the nearest deadline passes, or
/// [`MAX_WAIT`]; then empty `woken`.
fn wait_readable(waiting: &[Waiting], woken: &UnixStream, now: Instant) {
    let nearest = waiting
        .iter()
        .map(|w| w.deadline.saturating_duration_since(now))
        .min()
        .unwrap_or(MAX_WAIT)
        .min(MAX_WAIT);
    let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(waiting.len() + 1);
    fds.push(PollFd::new(woken, PollFlags::IN));
    fds.extend(
        waiting
            .iter()
            .map(|w| PollFd::new(&w.stream, PollFlags::IN)),
    );
    let timeout = Timespec {
        tv_sec: nearest.as_secs() as _,
        tv_nsec: nearest.subsec_nanos() as _,
    };
    if poll(&mut fds, Some(&timeout)).is_err() {
        // EINTR, or no memory for the descriptor list: do not spin.
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut drain = [0u8; 64];
    while matches!((&*woken).read(&mut drain), Ok(n) if n > 0) {}
}
