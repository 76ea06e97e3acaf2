//! [`ThreadedStream`] and [`ThreadedListener`]: std sockets as `futures-io` streams, for
//! executors without a reactor of their own.
//!
//! Each stream has a reader thread and a writer thread doing the blocking I/O; the async
//! side only moves bytes through small bounded buffers and wakers, so an executor thread
//! never blocks on the network. Backpressure is kept: a reader that does not poll leaves
//! the bytes in the socket (one read of at most 16 KiB is held), and a writer whose peer
//! does not read sees `Pending` once 64 KiB are queued. Dropping the stream shuts the
//! socket down and ends both threads.
//!
//! ```
//! use std::net::SocketAddr;
//! use futures_util::{AsyncReadExt, AsyncWriteExt, StreamExt};
//! use conformance::kit::sockets::{ThreadedListener, ThreadedStream};
//!
//! let mut listener = ThreadedListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
//! let addr = listener.local_addr();
//! let mut client = ThreadedStream::new(std::net::TcpStream::connect(addr).unwrap()).unwrap();
//! futures_executor::block_on(async {
//!     let mut server = listener.accept().await.unwrap();
//!     client.write_all(b"ping").await.unwrap();
//!     let mut buf = [0u8; 4];
//!     server.read_exact(&mut buf).await.unwrap();
//!     assert_eq!(&buf, b"ping");
//! });
//! ```

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_io::{AsyncRead, AsyncWrite};

/// Bytes one read of the reader thread takes from the socket at most.
const READ_BYTES: usize = 16 * 1024;
/// Bytes queued for the writer thread before `poll_write` says `Pending`.
const WRITE_QUEUE_BYTES: usize = 64 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct State {
    /// Read from the socket, not yet taken by `poll_read`.
    incoming: VecDeque<u8>,
    /// The reader thread saw EOF (`Ok`) or an error.
    read_end: Option<io::Result<()>>,
    read_waker: Option<Waker>,
    /// Written by `poll_write`, not yet on the socket.
    outgoing: VecDeque<u8>,
    /// The writer thread failed: later writes fail with this kind.
    write_error: Option<io::ErrorKind>,
    /// `poll_close` asked for a write shutdown once `outgoing` is empty.
    close_write: bool,
    write_waker: Option<Waker>,
    /// The stream was dropped: both threads end.
    dropped: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the reader thread (room for more) and the writer thread (bytes to send).
    changed: Condvar,
    socket: TcpStream,
}

/// A connected std [`TcpStream`] as a `futures-io` [`AsyncRead`] + [`AsyncWrite`], its
/// blocking I/O done by two threads of its own; see the [module docs](self).
pub struct ThreadedStream {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ThreadedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadedStream")
            .field("peer", &self.shared.socket.peer_addr().ok())
            .finish_non_exhaustive()
    }
}

impl ThreadedStream {
    /// Wrap `socket` (`TCP_NODELAY` is set) and start its two threads.
    pub fn new(socket: TcpStream) -> io::Result<Self> {
        socket.set_nodelay(true)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            socket,
        });
        let reader = shared.clone();
        std::thread::Builder::new()
            .name("kit-socket-read".into())
            .spawn(move || read_loop(&reader))?;
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("kit-socket-write".into())
            .spawn(move || write_loop(&writer))?;
        Ok(ThreadedStream { shared })
    }
}

fn read_loop(shared: &Shared) {
    let mut socket = &shared.socket;
    let mut chunk = vec![0u8; READ_BYTES];
    loop {
        {
            // Hold at most one read: wait until the async side took it.
            let mut state = lock(&shared.state);
            while !state.incoming.is_empty() && !state.dropped {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            if state.dropped {
                return;
            }
        }
        let read = socket.read(&mut chunk);
        let mut state = lock(&shared.state);
        match read {
            Ok(0) => state.read_end = Some(Ok(())),
            Ok(n) => state.incoming.extend(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => state.read_end = Some(Err(err)),
        }
        let done = state.read_end.is_some();
        if let Some(waker) = state.read_waker.take() {
            waker.wake();
        }
        if done {
            return;
        }
    }
}

fn write_loop(shared: &Shared) {
    let mut socket = &shared.socket;
    loop {
        let bytes: Vec<u8> = {
            let mut state = lock(&shared.state);
            loop {
                if state.dropped {
                    return;
                }
                if !state.outgoing.is_empty() {
                    break state.outgoing.iter().copied().collect();
                }
                if state.close_write {
                    let _ = shared.socket.shutdown(Shutdown::Write);
                    return;
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
        };
        // Blocks while the peer does not read: the async side sees `Pending` meanwhile.
        let written = socket.write_all(&bytes);
        let mut state = lock(&shared.state);
        match written {
            Ok(()) => {
                state.outgoing.drain(..bytes.len());
            }
            Err(err) => {
                state.write_error = Some(err.kind());
                state.outgoing.clear();
            }
        }
        if let Some(waker) = state.write_waker.take() {
            waker.wake();
        }
        if state.write_error.is_some() {
            return;
        }
    }
}

impl AsyncRead for ThreadedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = lock(&self.shared.state);
        if !state.incoming.is_empty() {
            let n = buf.len().min(state.incoming.len());
            for (slot, byte) in buf.iter_mut().zip(state.incoming.drain(..n)) {
                *slot = byte;
            }
            if state.incoming.is_empty() {
                self.shared.changed.notify_all();
            }
            return Poll::Ready(Ok(n));
        }
        match &state.read_end {
            Some(Ok(())) => Poll::Ready(Ok(0)),
            Some(Err(err)) => Poll::Ready(Err(io::Error::new(err.kind(), err.to_string()))),
            None => {
                state.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for ThreadedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = lock(&self.shared.state);
        if let Some(kind) = state.write_error {
            return Poll::Ready(Err(kind.into()));
        }
        if state.close_write {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = WRITE_QUEUE_BYTES.saturating_sub(state.outgoing.len());
        if room == 0 {
            state.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        state.outgoing.extend(&buf[..n]);
        self.shared.changed.notify_all();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = lock(&self.shared.state);
        if let Some(kind) = state.write_error {
            return Poll::Ready(Err(kind.into()));
        }
        if state.outgoing.is_empty() {
            return Poll::Ready(Ok(()));
        }
        state.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        {
            let mut state = lock(&self.shared.state);
            state.close_write = true;
            self.shared.changed.notify_all();
        }
        self.poll_flush(cx)
    }
}

impl Drop for ThreadedStream {
    fn drop(&mut self) {
        lock(&self.shared.state).dropped = true;
        self.shared.changed.notify_all();
        // Unblocks a reader in `read` and a writer in `write_all`.
        let _ = self.shared.socket.shutdown(Shutdown::Both);
    }
}

/// A bound std [`TcpListener`] whose connections arrive as [`ThreadedStream`]s, accepted by
/// a thread of its own. Dropping it stops that thread and closes the socket.
pub struct ThreadedListener {
    local_addr: SocketAddr,
    accepted: futures_channel::mpsc::UnboundedReceiver<io::Result<TcpStream>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for ThreadedListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadedListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl ThreadedListener {
    /// Bind `addr` and start accepting.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let (sender, accepted) = futures_channel::mpsc::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("kit-accept".into())
            .spawn(move || {
                for connection in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) || sender.unbounded_send(connection).is_err()
                    {
                        return; // the listener socket closes here
                    }
                }
            })?;
        Ok(ThreadedListener {
            local_addr,
            accepted,
            stop,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next connection.
    pub async fn accept(&mut self) -> io::Result<ThreadedStream> {
        use futures_util::StreamExt;
        match self.accepted.next().await {
            Some(connection) => ThreadedStream::new(connection?),
            None => Err(io::Error::other("the accept thread ended")),
        }
    }
}

impl Drop for ThreadedListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept thread out of `accept` so that it sees the flag.
        let _ = TcpStream::connect(self.local_addr);
    }
}
