//! The connections of a [`ThreadServer`](crate::ThreadServer) that wait for a request head:
//! new ones, and kept-alive ones between requests. One thread holds them all on
//! non-blocking sockets (`std` only, no executor), so that idle and slow-head connections
//! take no connection thread; a connection gets one once its head is complete (or broken,
//! or over the size limit: the connection thread answers that), and gives it back when its
//! response has been written and nothing more was sent.

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use agent_http1::{HeadLimits, HeadParser};

use crate::shared::{Shared, start_connection};

/// How long the thread sleeps between passes over its connections when none made
/// progress; it passes again at once after one did.
const IDLE_PASS: Duration = Duration::from_millis(2);
const MAX_IDLE_PASS: Duration = Duration::from_millis(10);

/// A connection waiting for (the rest of) a request head.
pub(crate) struct Waiting {
    pub(crate) stream: TcpStream,
    /// Bytes already read (the start of the head).
    pub(crate) buf: Vec<u8>,
    /// When `head_read_timeout` expires for it.
    pub(crate) deadline: Instant,
}

/// The waiting thread: receive connections from `arrivals`, read heads, hand complete
/// ones to connection threads, close those past their deadline.
pub(crate) fn wait_for_heads(shared: &Arc<Shared>, arrivals: &Receiver<Waiting>) {
    let config = shared.service.config();
    let mut parser = HeadParser::new(HeadLimits {
        max_headers: config.max_headers,
        max_head_bytes: config.effective_max_head_bytes(),
    });
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut pause = IDLE_PASS;
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
        if progressed {
            pause = IDLE_PASS;
        } else {
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_IDLE_PASS);
        }
    }
}
