//! [`TokioClient`]: the core's [`HttpClient`] on hyper's HTTP/1.1 client (the one
//! backend-smol uses, through [`agent_hyper::HyperClient`]), over tokio's TCP and
//! tokio-rustls.
//!
//! ```
//! use std::sync::Arc;
//! use agent_core::model::{OpenAiConfig, OpenAiModel};
//! use backend_tokio::TokioClient;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let client = Arc::new(TokioClient::new());
//! let model = OpenAiModel::new(OpenAiConfig::new("http://127.0.0.1:11434/v1", "llama3.2"), client);
//! # let _ = model;
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use agent_core::http::proxy::ProxyConfig;
use agent_core::http::{HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse};
use agent_core::runtime::BoxFuture;
use agent_hyper::{Connector, HyperClient, Target, Tunnel};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::TokioRuntime;

/// An [`HttpClient`] on hyper's HTTP/1.1 client over tokio's [`TcpStream`], TLS through
/// [`tokio_rustls`] (ring, the Mozilla roots of [`webpki_roots`]; certificates verified).
///
/// **Why a second tokio client.** [`ReqwestClient`](crate::ReqwestClient) runs every
/// connection as a task of its own and hands the body over through a channel, one HTTP
/// chunk per wake-up of the reading task: a stream of small SSE chunks costs two task
/// switches per chunk (often across threads on the multi-thread runtime). This client
/// spawns nothing: the connection is driven by whoever polls the response body, so
/// everything one socket read brought is decoded in that one poll, on that thread. That
/// makes it the cheaper client for a server relaying a model (what `agent serve` uses on
/// tokio) and for a run polled from `block_on` (`#[tokio::main]`), where reqwest's
/// connection task lives on a worker thread and every chunk crosses threads.
///
/// It keeps the [`HttpClient`] contract as every backend's client does (it is the same
/// code as backend-smol's client; only the sockets differ): `send` resolves on the
/// response head, body chunks are handed on as they are read, dropping the body closes the
/// connection, [`HttpRequest::connect_timeout`] bounds DNS, TCP, a proxy's `CONNECT` and
/// TLS together, connections are kept alive and reused once a body was read to the end,
/// proxies come from the environment ([`ProxyConfig::from_env`]) or
/// [`with_proxy`](Self::with_proxy), and errors carry no header values.
///
/// It can be polled from any executor: sockets are registered with the tokio runtime the
/// client was created in (or given with [`with_handle`](Self::with_handle)), whose I/O
/// driver must be running (a multi-thread runtime, or a current-thread runtime being
/// driven). [`openai_model`](crate::openai_model) speaks through it.
#[derive(Clone)]
pub struct TokioClient {
    client: HyperClient<TokioConnector>,
}

impl TokioClient {
    /// A client on the tokio runtime this is called in, trusting the Mozilla roots.
    ///
    /// Created outside a runtime, it uses the runtime its requests are polled in, and a
    /// request polled outside any fails with [`HttpErrorKind::Connect`] (it never panics).
    pub fn new() -> Self {
        TokioClient::from_parts(Handle::try_current().ok(), default_tls())
    }

    /// A client whose sockets and timers live on the runtime of `handle`.
    pub fn with_handle(handle: Handle) -> Self {
        TokioClient::from_parts(Some(handle), default_tls())
    }

    /// A client using your rustls configuration for `https://` (own roots, client
    /// certificates; ALPN should stay empty or offer `http/1.1`: this client speaks
    /// HTTP/1.1), on the runtime of `handle`.
    pub fn with_tls_config(handle: Handle, config: Arc<ClientConfig>) -> Self {
        TokioClient::from_parts(Some(handle), Ok(TlsConnector::from(config)))
    }

    fn from_parts(handle: Option<Handle>, tls: Result<TlsConnector, Arc<str>>) -> Self {
        // The connect timeout's timer: the runtime's, or (no runtime known yet) the core's
        // timer thread.
        let runtime: agent_core::runtime::SharedRuntime = match &handle {
            Some(handle) => Arc::new(TokioRuntime::from_handle(handle.clone())),
            None => Arc::new(agent_core::runtime::TestRuntime::new()),
        };
        TokioClient {
            client: HyperClient::new(TokioConnector { handle, tls }, runtime),
        }
    }

    /// The same client (sharing its pool) with the proxies of `config` instead of the
    /// environment's ([`ProxyConfig::none`] for none).
    pub fn with_proxy(self, config: ProxyConfig) -> Self {
        TokioClient {
            client: self.client.with_proxy(config),
        }
    }
}

impl Default for TokioClient {
    fn default() -> Self {
        TokioClient::new()
    }
}

fn default_tls() -> Result<TlsConnector, Arc<str>> {
    verified_config()
        .map(|config| TlsConnector::from(Arc::new(config)))
        .map_err(|err| format!("no TLS configuration: {err}").into())
}

impl fmt::Debug for TokioClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioClient")
            .field("proxy", self.client.proxy_config())
            .finish_non_exhaustive()
    }
}

impl HttpClient for TokioClient {
    fn send(&self, request: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        self.client.send(request)
    }
}

fn verified_config() -> Result<ClientConfig, rustls::Error> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Opens the connections of a [`TokioClient`]: tokio TCP, tokio-rustls TLS.
struct TokioConnector {
    /// The runtime sockets are registered with; `None`: the one the request is polled in.
    handle: Option<Handle>,
    /// The TLS connector, or why none could be built (then `https://` requests fail).
    tls: Result<TlsConnector, Arc<str>>,
}

impl fmt::Debug for TokioConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioConnector").finish_non_exhaustive()
    }
}

impl Connector for TokioConnector {
    type Io = TokioIo<Conn>;

    async fn connect(&self, target: &Target) -> Result<Self::Io, HttpError> {
        InHandle::new(self.handle()?, connect(&self.tls, target))
            .await
            .map(TokioIo::new)
    }

    async fn handshake_tls(&self, tunnel: Tunnel, target: &Target) -> Result<Self::Io, HttpError> {
        let handshake = tls_handshake(&self.tls, TokioIo::new(tunnel), target);
        InHandle::new(self.handle()?, handshake)
            .await
            .map(|stream| TokioIo::new(Conn::Tunnelled(Box::new(stream))))
    }
}

impl TokioConnector {
    fn handle(&self) -> Result<Handle, HttpError> {
        self.handle
            .clone()
            .or_else(|| Handle::try_current().ok())
            .ok_or_else(|| {
                HttpError::new(
                    HttpErrorKind::Connect,
                    "no tokio runtime: create the TokioClient inside one or give it a handle \
                     with TokioClient::with_handle",
                )
            })
    }
}

/// A future polled inside a tokio runtime's context, so that the sockets it creates are
/// registered with that runtime's I/O driver whoever polls it.
struct InHandle<F> {
    handle: Handle,
    inner: Pin<Box<F>>,
}

impl<F> InHandle<F> {
    fn new(handle: Handle, inner: F) -> Self {
        InHandle {
            handle,
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for InHandle<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _entered = this.handle.enter();
        this.inner.as_mut().poll(cx)
    }
}

/// A client connection, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// TLS inside a proxy's `CONNECT` tunnel.
    Tunnelled(Box<TlsStream<TokioIo<Tunnel>>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Conn::Tunnelled(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Conn::Tunnelled(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Conn::Tunnelled(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Conn::Tunnelled(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

async fn connect(tls: &Result<TlsConnector, Arc<str>>, target: &Target) -> Result<Conn, HttpError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|err| target.connect_error(err))?;
    // Requests are small and written at once; do not let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    if !target.https {
        return Ok(Conn::Plain(tcp));
    }
    tls_handshake(tls, tcp, target)
        .await
        .map(|stream| Conn::Tls(Box::new(stream)))
}

/// TLS with `target` over `io` (a TCP stream, or a proxy tunnel), verified for its host.
async fn tls_handshake<IO: AsyncRead + AsyncWrite + Unpin>(
    tls: &Result<TlsConnector, Arc<str>>,
    io: IO,
    target: &Target,
) -> Result<TlsStream<IO>, HttpError> {
    let name =
        ServerName::try_from(target.host.clone()).map_err(|_| target.invalid_server_name())?;
    let tls = tls
        .as_ref()
        .map_err(|why| HttpError::new(HttpErrorKind::Connect, why.to_string()))?;
    tls.connect(name, io)
        .await
        .map_err(|err| target.tls_error(err))
}
