//! [`SmolClient`]: the core's [`HttpClient`] on hyper's HTTP/1.1 client, over async-net and
//! futures-rustls.
//!
//! HTTP is hyper's, through [`agent_hyper::HyperClient`] (shared with every async backend):
//! this file only opens connections (TCP with `TCP_NODELAY`, then TLS for `https://`).
//! Connections are kept alive and reused once a response was read to the end; dropping a
//! body (or the `send` future) early closes its connection at once, so an unread body is
//! never reused.
//!
//! ```no_run
//! use agent_core::http::{HttpClient, HttpRequest, Method};
//! use backend_smol::SmolClient;
//! use futures_lite::StreamExt;
//!
//! let client = SmolClient::new();
//! smol::block_on(async {
//!     let request = HttpRequest::new(Method::Get, "http://127.0.0.1:8080/healthz");
//!     let mut response = client.send(request).await?;
//!     println!("status {}", response.status);
//!     while let Some(chunk) = response.body.next().await {
//!         print!("{}", String::from_utf8_lossy(&chunk?));
//!     }
//!     Ok::<_, agent_core::http::HttpError>(())
//! })?;
//! # Ok::<_, agent_core::http::HttpError>(())
//! ```

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use agent_core::http::proxy::ProxyConfig;
use agent_core::http::{HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse};
use agent_core::runtime::BoxFuture;
use agent_hyper::{Connector, FuturesIo, HyperClient, Target, Tunnel};
use async_net::TcpStream;
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use futures_rustls::pki_types::ServerName;
use futures_rustls::rustls::{self, ClientConfig};

use crate::SmolRuntime;

/// An [`HttpClient`] for the smol family: hyper's HTTP/1.1 over [`async_net`], TLS through
/// [`futures_rustls`] with the Mozilla roots of [`webpki_roots`].
///
/// Certificates are verified: a server whose certificate does not verify fails with
/// [`HttpErrorKind::Connect`] and a message naming the certificate problem. The only
/// opt-out, for a local development server with a self-signed certificate, is
/// [`SmolClient::danger_accept_invalid_certs`].
///
/// It keeps every promise of the [`HttpClient`] contract: `send` resolves on the response
/// head; body chunks are delivered as they are read; dropping the body closes the
/// connection; [`HttpRequest::connect_timeout`] bounds DNS, TCP, a proxy's `CONNECT` and
/// TLS together; errors carry no header values. Clones share one keep-alive pool.
///
/// Proxies come from the environment ([`ProxyConfig::from_env`]: `HTTP_PROXY`,
/// `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, read as every backend's client reads them) or
/// from [`with_proxy`](Self::with_proxy): `http://` URLs go to the proxy as absolute-form
/// requests, `https://` URLs through a `CONNECT` tunnel with TLS to the upstream inside
/// (its certificate verified for the upstream's name).
///
/// It needs no executor of its own: its futures can be polled by any executor, or by
/// `smol::block_on`, since socket readiness and timers come from async-io's reactor.
#[derive(Clone)]
pub struct SmolClient {
    client: HyperClient<SmolConnector>,
}

impl SmolClient {
    /// A client that trusts the Mozilla root certificates of [`webpki_roots`].
    pub fn new() -> Self {
        SmolClient::from_config(crate::tls::verified_config(), false)
    }

    /// A client using your rustls configuration for `https://` (own roots, client
    /// certificates; ALPN should stay empty or offer `http/1.1`: this client speaks HTTP/1.1).
    pub fn with_tls_config(config: Arc<ClientConfig>) -> Self {
        SmolClient::with_connector(SmolConnector {
            tls: Ok(TlsConnector::from(config)),
            danger_accept_invalid_certs: false,
        })
    }

    /// A client like [`new`](Self::new) that accepts **any** TLS certificate: self-signed,
    /// expired, issued for another host. For local development servers only (a model server
    /// on your machine with a self-signed certificate); never for a remote API, where it
    /// would hand your API key and your data to whoever intercepts the connection.
    ///
    /// Every other client of this crate verifies certificates. To trust one private
    /// certificate authority instead, keep verification on: build a rustls [`ClientConfig`]
    /// with its root and use [`with_tls_config`](Self::with_tls_config).
    ///
    /// ```
    /// // https://127.0.0.1:8443 serves a self-signed certificate.
    /// let client = backend_smol::SmolClient::danger_accept_invalid_certs();
    /// # let _ = client;
    /// ```
    pub fn danger_accept_invalid_certs() -> Self {
        tracing::warn!(
            "SmolClient::danger_accept_invalid_certs: TLS certificates are NOT verified \
             (for local development servers only)"
        );
        SmolClient::from_config(crate::tls::accept_any_config(), true)
    }

    fn from_config(config: Result<ClientConfig, rustls::Error>, danger: bool) -> Self {
        let tls = config
            .map(|config| TlsConnector::from(Arc::new(config)))
            .map_err(|err| format!("no TLS configuration: {err}").into());
        SmolClient::with_connector(SmolConnector {
            tls,
            danger_accept_invalid_certs: danger,
        })
    }

    /// The same client (sharing its pool) with the proxies of `config` instead of the
    /// environment's ([`ProxyConfig::none`] for none).
    ///
    /// ```
    /// use agent_core::http::proxy::{ProxyConfig, ProxyRoute};
    /// let proxy = ProxyConfig::none().with_https(Some(ProxyRoute::new("127.0.0.1", 3128)));
    /// let client = backend_smol::SmolClient::new().with_proxy(proxy);
    /// # let _ = client;
    /// ```
    pub fn with_proxy(self, config: ProxyConfig) -> Self {
        SmolClient {
            client: self.client.with_proxy(config),
        }
    }

    fn with_connector(connector: SmolConnector) -> Self {
        SmolClient {
            client: HyperClient::new(connector, SmolRuntime::global().shared()),
        }
    }
}

impl Default for SmolClient {
    fn default() -> Self {
        SmolClient::new()
    }
}

impl fmt::Debug for SmolClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolClient")
            .field(
                "danger_accept_invalid_certs",
                &self.client.connector().danger_accept_invalid_certs,
            )
            .field("proxy", self.client.proxy_config())
            .finish_non_exhaustive()
    }
}

impl HttpClient for SmolClient {
    fn send(&self, request: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        self.client.send(request)
    }
}

/// Opens the connections of a [`SmolClient`]: async-net TCP, futures-rustls TLS.
struct SmolConnector {
    /// The TLS connector, or why none could be built (then `https://` requests fail).
    tls: Result<TlsConnector, Arc<str>>,
    /// Made by [`SmolClient::danger_accept_invalid_certs`] (shown in `Debug`).
    danger_accept_invalid_certs: bool,
}

impl fmt::Debug for SmolConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolConnector")
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .finish_non_exhaustive()
    }
}

impl Connector for SmolConnector {
    type Io = FuturesIo<Conn>;

    async fn connect(&self, target: &Target) -> Result<Self::Io, HttpError> {
        connect(&self.tls, target).await.map(FuturesIo::new)
    }

    async fn handshake_tls(&self, tunnel: Tunnel, target: &Target) -> Result<Self::Io, HttpError> {
        tls_handshake(&self.tls, tunnel, target)
            .await
            .map(|stream| FuturesIo::new(Conn::Tunnelled(Box::new(stream))))
    }
}

/// A client connection, plain or TLS.
pub(crate) enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// TLS inside a proxy's `CONNECT` tunnel.
    Tunnelled(Box<TlsStream<Tunnel>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
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

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_close(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_close(cx),
            Conn::Tunnelled(s) => Pin::new(&mut **s).poll_close(cx),
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
