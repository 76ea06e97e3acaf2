//! [`TestProxy`]: an HTTP proxy on `127.0.0.1:0`, on std threads (independent of every
//! runtime), for testing that a client honours `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and
//! `NO_PROXY`.
//!
//! It records the request line of everything it receives: an absolute-form request
//! (`POST http://127.0.0.1:PORT/v1/chat/completions HTTP/1.1`) is forwarded to its target
//! (in origin-form, with `Connection: close`) and the response relayed back byte by byte as
//! it arrives; a `CONNECT 127.0.0.1:PORT` is answered `200` and tunnelled. It can require
//! Basic credentials (anything else gets `407 Proxy Authentication Required`). It only
//! connects to loopback addresses (any other target gets `403`). Every socket has a read
//! and write timeout; dropping the proxy closes the listener and every connection.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//! use std::time::Duration;
//! use conformance::kit::proxy::TestProxy;
//! use conformance::kit::upstream::{openai, GatedUpstream, Response};
//!
//! let upstream = GatedUpstream::start([openai::answer(&["Hi"])]).unwrap();
//! let proxy = TestProxy::start().unwrap();
//! let mut socket = TcpStream::connect(proxy.addr()).unwrap();
//! let request = format!(
//!     "POST http://{0}/v1/chat/completions HTTP/1.1\r\nhost: {0}\r\ncontent-length: 2\r\n\r\n{{}}",
//!     upstream.addr()
//! );
//! socket.write_all(request.as_bytes()).unwrap();
//! let mut response = String::new();
//! socket.read_to_string(&mut response).unwrap();
//! assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(response.contains(r#""content":"Hi""#));
//! assert!(proxy.wait_for_requests(1, Duration::from_secs(5)));
//! assert_eq!(
//!     proxy.request_lines(),
//!     [format!("POST http://{}/v1/chat/completions HTTP/1.1", upstream.addr())]
//! );
//! assert_eq!(upstream.requests()[0].path, "/v1/chat/completions");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agent_http1::{BodyFraming, HeadLimits, HeadParser, HeadWriter, RequestHead};

/// The read and write timeout of every socket of the proxy: nothing it does waits longer.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);

/// A request the proxy received (before any authentication check).
#[derive(Debug, Clone)]
pub struct ProxiedRequest {
    /// The method, e.g. `POST` or `CONNECT`.
    pub method: String,
    /// The request target as sent: `http://host:port/path` or, for `CONNECT`, `host:port`.
    pub target: String,
    /// The header fields, in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl ProxiedRequest {
    /// The request line, e.g. `CONNECT 127.0.0.1:8443 HTTP/1.1`.
    pub fn request_line(&self) -> String {
        format!("{} {} HTTP/1.1", self.method, self.target)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    /// The `Proxy-Authorization` value required, if any.
    required: Option<String>,
    requests: Mutex<Vec<ProxiedRequest>>,
    changed: Condvar,
    shutdown: AtomicBool,
    /// Clones of every open socket (both sides), to close them on drop.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    next_socket: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn track(&self, stream: &TcpStream) -> Option<u64> {
        let clone = stream.try_clone().ok()?;
        let id = self.next_socket.fetch_add(1, Ordering::Relaxed);
        lock(&self.sockets).insert(id, clone);
        if self.shutdown.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        Some(id)
    }

    fn untrack(&self, id: Option<u64>) {
        if let Some(id) = id {
            lock(&self.sockets).remove(&id);
        }
    }
}

/// An HTTP forward proxy and CONNECT tunnel for tests; see the [module docs](self).
pub struct TestProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl fmt::Debug for TestProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestProxy")
            .field("addr", &self.addr)
            .field("requests", &self.request_count())
            .field("requires_credentials", &self.shared.required.is_some())
            .finish()
    }
}

impl TestProxy {
    /// A proxy that lets every request through.
    pub fn start() -> io::Result<Self> {
        Self::spawn(None)
    }

    /// A proxy that requires `Proxy-Authorization: Basic base64(user:password)` and answers
    /// `407` to anything else.
    pub fn with_credentials(user: &str, password: &str) -> io::Result<Self> {
        let route = agent_core::http::proxy::ProxyRoute::new("127.0.0.1", 0)
            .with_credentials(user, password.into());
        let expected = route
            .basic_authorization()
            .map(|value| value.expose().to_string());
        Self::spawn(expected)
    }

    fn spawn(required: Option<String>) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            required,
            requests: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            shutdown: AtomicBool::new(false),
            sockets: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(0),
        });
        let accept_shared = shared.clone();
        std::thread::Builder::new()
            .name("test-proxy".into())
            .spawn(move || accept_loop(listener, accept_shared))?;
        Ok(TestProxy { shared, addr })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: the value for `HTTP_PROXY` and friends.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:password@127.0.0.1:<port>` (no percent-encoding: pass plain values).
    pub fn url_with_credentials(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The request line of every request received so far, in order.
    pub fn request_lines(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(ProxiedRequest::request_line)
            .collect()
    }

    /// How many requests were received.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Block until `n` requests have arrived or `timeout` passes; whether they did.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut requests = lock(&self.shared.requests);
        while requests.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            requests = self
                .shared
                .changed
                .wait_timeout(requests, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for (_, socket) in lock(&self.shared.sockets).drain() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.shutdown.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("test-proxy-conn".into())
                    .spawn(move || {
                        let id = shared.track(&stream);
                        let _ = serve(stream, &shared);
                        shared.untrack(id);
                    });
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn answer(client: &mut TcpStream, status: u16, extra: &[(&str, &str)]) -> io::Result<()> {
    let head = HeadWriter::response(status)
        .headers(extra.iter().copied())
        .header("content-length", "0")
        .header("connection", "close")
        .finish();
    client.write_all(&head)?;
    client.flush()
}

/// Read one request head; `None` if the client closed first.
fn read_head(client: &mut TcpStream) -> io::Result<Option<(RequestHead, Vec<u8>)>> {
    let mut parser = HeadParser::new(HeadLimits::default());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        match parser.parse_request(&buf) {
            Ok(Some((head, used))) => return Ok(Some((head, buf.split_off(used)))),
            Ok(None) => continue,
            Err(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err.to_string())),
        }
    }
}

/// Connect to `authority` (`host:port`) if it is a loopback address.
fn connect_loopback(authority: &str) -> io::Result<TcpStream> {
    let addr = authority
        .to_socket_addrs()?
        .find(|a| a.ip().is_loopback())
        .ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "not a loopback target"))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    stream.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn serve(mut client: TcpStream, shared: &Shared) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    client.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    let _ = client.set_nodelay(true);
    let Some((head, leftover)) = read_head(&mut client)? else {
        return Ok(());
    };
    {
        let mut requests = lock(&shared.requests);
        requests.push(ProxiedRequest {
            method: head.method.clone(),
            target: head.target.clone(),
            headers: head.headers.clone(),
        });
        shared.changed.notify_all();
    }
    if let Some(required) = &shared.required
        && head.header("proxy-authorization") != Some(required.as_str())
    {
        return answer(
            &mut client,
            407,
            &[("proxy-authenticate", "Basic realm=\"test-proxy\"")],
        );
    }
    if head.method.eq_ignore_ascii_case("CONNECT") {
        let Ok(upstream) = connect_loopback(&head.target) else {
            return answer(&mut client, 403, &[]);
        };
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
        return relay(client, upstream, &leftover, shared);
    }
    let Some(rest) = head.target.strip_prefix("http://") else {
        // Not absolute-form: a proxy cannot know where to send it.
        return answer(&mut client, 400, &[]);
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let length = match head.body_framing() {
        Ok(BodyFraming::Length(n)) => n,
        _ => return answer(&mut client, 501, &[]),
    };
    let Ok(mut upstream) = connect_loopback(authority) else {
        return answer(&mut client, 403, &[]);
    };
    let forwarded: Vec<(&str, &str)> = head
        .headers
        .iter()
        .filter(|(n, _)| {
            !["proxy-authorization", "proxy-connection", "connection"]
                .iter()
                .any(|h| n.eq_ignore_ascii_case(h))
        })
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let request = HeadWriter::request(&head.method, &head.path)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err.to_string()))?
        .headers(forwarded)
        .header("connection", "close")
        .finish();
    upstream.write_all(&request)?;
    // The body: what came with the head, then the rest up to its length.
    let mut left = length;
    let take = usize::try_from(left)
        .unwrap_or(usize::MAX)
        .min(leftover.len());
    upstream.write_all(&leftover[..take])?;
    left -= take as u64;
    let mut chunk = [0u8; 8192];
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(chunk.len());
        let n = client.read(&mut chunk[..want])?;
        if n == 0 {
            return Ok(());
        }
        upstream.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    // The response, relayed as it arrives until the upstream closes.
    let id = shared.track(&upstream);
    let copied = copy(&mut upstream, &mut client);
    shared.untrack(id);
    let _ = client.shutdown(Shutdown::Both);
    copied
}

/// Copy `from` to `to` chunk by chunk until EOF.
fn copy(from: &mut TcpStream, to: &mut TcpStream) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    loop {
        let n = from.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&chunk[..n])?;
        to.flush()?;
    }
}

/// Tunnel bytes both ways between `client` and `upstream` until either side closes.
fn relay(
    client: TcpStream,
    upstream: TcpStream,
    leftover: &[u8],
    shared: &Shared,
) -> io::Result<()> {
    let id = shared.track(&upstream);
    let mut up_write = upstream.try_clone()?;
    up_write.write_all(leftover)?;
    let mut client_read = client.try_clone()?;
    let forward = std::thread::Builder::new()
        .name("test-proxy-tunnel".into())
        .spawn(move || {
            let _ = copy(&mut client_read, &mut up_write);
            let _ = up_write.shutdown(Shutdown::Write);
        })?;
    let mut up_read = upstream;
    let mut client_write = client;
    let _ = copy(&mut up_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Both);
    let _ = up_read.shutdown(Shutdown::Both);
    let _ = forward.join();
    shared.untrack(id);
    Ok(())
}
