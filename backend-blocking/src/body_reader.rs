//! The thread that reads the response bodies of every [`UreqClient`](crate::UreqClient)
//! exchange (Linux and Android: `epoll(7)` through rustix).
//!
//! An exchange thread sends the request and waits for the response head with ureq's
//! blocking calls; then it puts the connection's socket in non-blocking mode and hands the
//! body over to this thread ([`hand_over`]), and ends. This thread waits on all those
//! sockets at once and, whenever one is readable and its consumer has room in its channel,
//! calls ureq's body `read` until the socket has nothing more (`WouldBlock`, which the
//! client's transport reports instead of waiting), forwarding each chunk the moment `read`
//! returns it. A stream then costs its buffers and its channel, not a thread (a thread takes
//! its stack pages and four memory mappings: 10,000 of them do not fit in Linux's default
//! `vm.max_map_count` next to the consumers' own threads).
//!
//! A consumer that takes a chunk from a full channel wakes this thread through the sender's
//! waker; a dropped consumer aborts the exchange, whose socket is shut down, which makes it
//! readable here, so the entry goes away on the next pass.

use std::sync::Arc;

use futures_channel::mpsc;

use crate::client::{Chunk, Exchange, Socket};

/// A body handed over by an exchange thread.
pub(crate) struct BodyJob {
    pub(crate) reader: ureq::BodyReader<'static>,
    pub(crate) socket: Arc<Socket>,
    pub(crate) exchange: Arc<Exchange>,
    pub(crate) body_tx: mpsc::Sender<Chunk>,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use imp::hand_over;

/// Without `epoll`: the exchange thread reads its own body.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn hand_over(job: Box<BodyJob>) -> Result<(), Box<BodyJob>> {
    Err(job)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use std::collections::HashMap;
    use std::io::{self, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::panic::AssertUnwindSafe;
    use std::sync::{Arc, Mutex, OnceLock};
    use std::task::{Context, Poll, Wake, Waker};

    use agent_core::http::{HttpError, HttpErrorKind};
    use bytes::Bytes;
    use rustix::buffer::spare_capacity;
    use rustix::event::epoll;

    use super::BodyJob;
    use crate::client::with_exchange;

    /// Chunks read from one socket in a row before the others get their turn.
    const READS_PER_TURN: usize = 8;

    /// The key of the wake-up socket in the epoll set.
    const WAKE_KEY: u64 = 0;

    /// What the exchange threads share with the reader thread.
    struct Shared {
        /// Bodies handed over, not yet registered.
        arrivals: Mutex<Vec<BodyJob>>,
        /// Entries whose consumer made room (their sender's waker fired).
        woken: Mutex<Vec<u64>>,
        /// Written to wake the reader thread up (non-blocking; a full buffer is a pending wake-up).
        wake_tx: UnixStream,
    }

    impl Shared {
        fn wake(&self) {
            let _ = (&self.wake_tx).write(&[1]);
        }
    }

    /// The waker of one entry's sender: marks the entry and wakes the thread.
    struct RoomWaker {
        key: u64,
        shared: Arc<Shared>,
    }

    impl Wake for RoomWaker {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            lock(&self.shared.woken).push(self.key);
            self.shared.wake();
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reader thread, started by the first hand-over (`None` if it could not start).
    fn reader() -> Option<&'static Arc<Shared>> {
        static READER: OnceLock<Option<Arc<Shared>>> = OnceLock::new();
        READER.get_or_init(start).as_ref()
    }

    fn start() -> Option<Arc<Shared>> {
        let (wake_tx, wake_rx) = UnixStream::pair().ok()?;
        wake_tx.set_nonblocking(true).ok()?;
        wake_rx.set_nonblocking(true).ok()?;
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).ok()?;
        epoll::add(
            &epoll,
            &wake_rx,
            epoll::EventData::new_u64(WAKE_KEY),
            epoll::EventFlags::IN,
        )
        .ok()?;
        let shared = Arc::new(Shared {
            arrivals: Mutex::new(Vec::new()),
            woken: Mutex::new(Vec::new()),
            wake_tx,
        });
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("ureq-body-reader".into())
            .spawn(move || Reader::new(thread_shared, epoll, wake_rx).run());
        match spawned {
            Ok(_) => Some(shared),
            Err(err) => {
                tracing::warn!(error = %err, "could not start the body reader thread; each exchange reads its own body");
                None
            }
        }
    }

    /// Give `job` to the reader thread; `Err(job)` if there is none (the caller reads it).
    pub(crate) fn hand_over(job: Box<BodyJob>) -> Result<(), Box<BodyJob>> {
        let Some(shared) = reader() else {
            return Err(job);
        };
        if job.socket.enter_shared().is_err() {
            return Err(job);
        }
        lock(&shared.arrivals).push(*job);
        shared.wake();
        Ok(())
    }

    struct Entry {
        job: BodyJob,
        waker: Waker,
        /// The socket may have bytes (edge-triggered: set by an event, cleared by `WouldBlock`).
        readable: bool,
    }

    /// What one turn of an entry ended with.
    enum Turn {
        /// Waiting for bytes or for room.
        Wait,
        /// Read its share: give it another turn after the others.
        Again,
        /// The body ended, failed, or its consumer went away.
        Done,
    }

    struct Reader {
        shared: Arc<Shared>,
        epoll: rustix::fd::OwnedFd,
        wake_rx: UnixStream,
        entries: HashMap<u64, Entry>,
        next_key: u64,
        buf: Vec<u8>,
    }

    impl Reader {
        fn new(shared: Arc<Shared>, epoll: rustix::fd::OwnedFd, wake_rx: UnixStream) -> Self {
            Reader {
                shared,
                epoll,
                wake_rx,
                entries: HashMap::new(),
                next_key: WAKE_KEY + 1,
                buf: vec![0u8; crate::client::READ_BUFFER_SIZE],
            }
        }

        fn run(mut self) {
            let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
            let mut again: Vec<u64> = Vec::new();
            loop {
                let arrivals = std::mem::take(&mut *lock(&self.shared.arrivals));
                for job in arrivals {
                    if let Some(key) = self.register(job) {
                        again.push(key);
                    }
                }
                let woken = std::mem::take(&mut *lock(&self.shared.woken));
                again.extend(woken);
                let mut turns = std::mem::take(&mut again);
                // Wait only when no entry has work left; otherwise just collect new events.
                let zero = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                let timeout = if turns.is_empty() { None } else { Some(&zero) };
                events.clear();
                if epoll::wait(&self.epoll, spare_capacity(&mut events), timeout).is_err() {
                    // EINTR (or a transient failure): go round again.
                }
                for event in &events {
                    let key = event.data.u64();
                    if key == WAKE_KEY {
                        let mut drain = [0u8; 64];
                        while matches!((&self.wake_rx).read(&mut drain), Ok(n) if n > 0) {}
                        continue;
                    }
                    if let Some(entry) = self.entries.get_mut(&key) {
                        entry.readable = true;
                        turns.push(key);
                    }
                }
                turns.sort_unstable();
                turns.dedup();
                for key in turns {
                    match self.turn(key) {
                        Turn::Wait => {}
                        Turn::Again => again.push(key),
                        Turn::Done => self.remove(key),
                    }
                }
            }
        }

        /// Add `job` to the epoll set; its first turn reads what ureq may already hold.
        fn register(&mut self, job: BodyJob) -> Option<u64> {
            let key = self.next_key;
            self.next_key += 1;
            let added = epoll::add(
                &self.epoll,
                job.socket.stream(),
                epoll::EventData::new_u64(key),
                epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ET,
            );
            if let Err(err) = added {
                fail(
                    job,
                    &format!("reading the response body failed: could not watch the socket: {err}"),
                );
                return None;
            }
            let waker = Waker::from(Arc::new(RoomWaker {
                key,
                shared: self.shared.clone(),
            }));
            self.entries.insert(
                key,
                Entry {
                    job,
                    waker,
                    readable: true,
                },
            );
            Some(key)
        }

        fn remove(&mut self, key: u64) {
            if let Some(entry) = self.entries.remove(&key) {
                let _ = epoll::delete(&self.epoll, entry.job.socket.stream());
            }
        }

        /// Read the entry's body while it has bytes and room, at most [`READS_PER_TURN`] chunks.
        fn turn(&mut self, key: u64) -> Turn {
            let Some(entry) = self.entries.get_mut(&key) else {
                return Turn::Wait;
            };
            let buf = &mut self.buf;
            let exchange = entry.job.exchange.clone();
            let turned = std::panic::catch_unwind(AssertUnwindSafe(|| {
                with_exchange(&exchange, || turn(entry, buf))
            }));
            turned.unwrap_or_else(|_| {
                // A panic must not look like the end of the body: report a broken body instead.
                entry.job.exchange.abort();
                let message = "reading the response body failed: the reader panicked";
                let _ = entry
                    .job
                    .body_tx
                    .try_send(Err(HttpError::new(HttpErrorKind::Io, message)));
                Turn::Done
            })
        }
    }

    fn turn(entry: &mut Entry, buf: &mut [u8]) -> Turn {
        let job = &mut entry.job;
        let mut cx = Context::from_waker(&entry.waker);
        for _ in 0..READS_PER_TURN {
            // Wait for room first: never read from the socket for a consumer that is gone.
            match job.body_tx.poll_ready(&mut cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => {
                    job.exchange.abort();
                    return Turn::Done;
                }
                Poll::Pending => return Turn::Wait,
            }
            if !entry.readable {
                return Turn::Wait;
            }
            match job.reader.read(buf) {
                Ok(0) => {
                    // The body is complete and ureq may have pooled the connection: a late drop
                    // of the body stream must not shut it down any more.
                    job.exchange.finish();
                    return Turn::Done;
                }
                Ok(n) => {
                    if job
                        .body_tx
                        .start_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        job.exchange.abort();
                        return Turn::Done;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    entry.readable = false;
                    return Turn::Wait;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    if !job.exchange.is_aborted() {
                        let message = format!("reading the response body failed: {err}");
                        let _ = job
                            .body_tx
                            .start_send(Err(HttpError::new(HttpErrorKind::Io, message)));
                    }
                    return Turn::Done;
                }
            }
        }
        Turn::Again
    }

    /// End `job` with an error (it never reached the epoll set).
    fn fail(mut job: BodyJob, message: &str) {
        job.exchange.abort();
        let _ = job
            .body_tx
            .try_send(Err(HttpError::new(HttpErrorKind::Io, message)));
    }
}
