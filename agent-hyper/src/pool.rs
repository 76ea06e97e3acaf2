//! The keep-alive pool of [`HyperClient`](crate::HyperClient): idle HTTP/1.1 connections by
//! origin, each with the hyper connection future that drives it.
//!
//! The client spawns no task: whoever uses a connection polls its driver (the request
//! future while waiting for the head, the body stream while reading the body). A connection
//! goes back to the pool only once its response body was read to the end; one whose body
//! was dropped early, or that failed, is dropped, which closes its socket at once.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{Connection, SendRequest};

use crate::AgentBody;
use crate::client::PoolKey;

/// Idle connections kept per origin.
const MAX_IDLE_PER_ORIGIN: usize = 8;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a pooled connection runs over.
pub(crate) trait Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static {}

impl<T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static> Io for T {}

/// One HTTP/1.1 connection: the handle that sends requests and the future that drives it
/// (`None` once it has finished: the peer closed it).
pub(crate) struct PooledConnection<I: Io> {
    pub(crate) sender: SendRequest<AgentBody>,
    pub(crate) driver: Option<Pin<Box<Connection<I, AgentBody>>>>,
    /// Whether it served a request before (a failure on it may be a stale keep-alive).
    pub(crate) reused: bool,
}

impl<I: Io> PooledConnection<I> {
    /// Drive the connection; `true` while it is still open.
    pub(crate) fn poll_driver(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(driver) = &mut self.driver
            && let Poll::Ready(result) = driver.as_mut().poll(cx)
        {
            if let Err(err) = result {
                tracing::debug!(%err, "upstream connection ended with an error");
            }
            self.driver = None;
        }
        self.driver.is_some()
    }
}

struct Idle<I: Io> {
    connection: PooledConnection<I>,
    since: Instant,
}

/// Idle connections by origin.
pub(crate) struct Pool<I: Io> {
    idle: Mutex<HashMap<PoolKey, Vec<Idle<I>>>>,
}

impl<I: Io> Default for Pool<I> {
    fn default() -> Self {
        Pool {
            idle: Mutex::new(HashMap::new()),
        }
    }
}

impl<I: Io> Pool<I> {
    /// An idle connection to `origin` that is still open and ready for a request.
    pub(crate) fn checkout(
        &self,
        origin: &PoolKey,
        cx: &mut Context<'_>,
    ) -> Option<PooledConnection<I>> {
        loop {
            let mut candidate = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                let list = idle.get_mut(origin)?;
                let candidate = list.pop();
                if list.is_empty() {
                    idle.remove(origin);
                }
                candidate?
            };
            if candidate.since.elapsed() > IDLE_TIMEOUT {
                continue; // dropped: closed
            }
            // A connection the peer closed meanwhile shows it on the first poll (EOF is
            // already queued); one that is not ready for a request at once is not reused.
            let open = candidate.connection.poll_driver(cx);
            if open
                && candidate.connection.sender.poll_ready(cx).is_ready()
                && candidate.connection.sender.is_ready()
            {
                candidate.connection.reused = true;
                return Some(candidate.connection);
            }
        }
    }

    /// Keep `connection` for the next request to `origin` (its response was read to the
    /// end).
    pub(crate) fn checkin(&self, origin: PoolKey, connection: PooledConnection<I>) {
        if connection.driver.is_none() || connection.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(origin).or_default();
        list.retain(|c| c.since.elapsed() <= IDLE_TIMEOUT);
        if list.len() < MAX_IDLE_PER_ORIGIN {
            list.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }

    /// How many idle connections are kept.
    pub(crate) fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.values().map(Vec::len).sum()
    }
}
