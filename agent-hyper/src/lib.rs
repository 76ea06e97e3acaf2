//! The agent HTTP API and an HTTP client on [hyper] 1.x, written once for every async
//! runtime.
//!
//! hyper does the HTTP/1.1 (parsing, framing, keep-alive, chunked coding); this crate adds
//! what the agent server and client need on top, generic over hyper's runtime traits
//! ([`hyper::rt::Read`], [`hyper::rt::Write`], [`hyper::rt::Timer`]), so that backend-tokio
//! and backend-smol (and a backend for any other executor) share one implementation:
//!
//! * [`handle_request`]: one HTTP request to [`AgentService`](agent_core::server::AgentService),
//!   with the body read under [`ServerConfig`](agent_core::server::ServerConfig)'s limit and
//!   deadline, and the answer as an [`AgentBody`] that streams every event as produced.
//! * [`serve_connection`] and [`Server`]: a connection and an accept loop applying every
//!   limit and timeout of `ServerConfig` (head read timeout, header count and bytes, body
//!   read timeout, write timeout), with graceful shutdown.
//! * [`HyperClient`]: the core's [`HttpClient`](agent_core::http::HttpClient) over any
//!   [`Connector`] (TCP and TLS are the backend's), with a keep-alive pool, a connect
//!   timeout and the proxies of [`ProxyConfig`](agent_core::http::proxy::ProxyConfig)
//!   (absolute-form requests for `http://`, a `CONNECT` [`Tunnel`] for `https://`).
//! * [`FuturesIo`] (a `futures-io` stream as hyper I/O), [`RuntimeTimer`] (hyper's timer from
//!   the core's [`Runtime`](agent_core::runtime::Runtime)) and [`WriteTimeout`].
//!
//! One request through the handler, without a socket (a backend's connection does the same
//! for every request it reads):
//!
//! ```
//! use std::sync::Arc;
//! use agent_core::agent::Agent;
//! use agent_core::model::{ScriptedModel, Turn};
//! use agent_core::runtime::{block_on, TestRuntime};
//! use agent_core::server::{AgentService, ServerConfig};
//! use agent_hyper::{handle_request, AgentBody};
//! use agent_hyper::hyper::Request;
//! use http_body_util::BodyExt;
//!
//! let agent = Agent::builder()
//!     .model(ScriptedModel::new([Turn::new().text("Hello!")]))
//!     .runtime(TestRuntime::new())
//!     .build()
//!     .unwrap();
//! let service = AgentService::new(agent, ServerConfig::default());
//! let request = Request::post("/v1/runs")
//!     .header("content-type", "application/json")
//!     .body(AgentBody::full(r#"{"input":"hi"}"#))
//!     .unwrap();
//! let response = block_on(handle_request(&service, request));
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()["x-accel-buffering"], "no");
//! let body = block_on(response.into_body().collect()).unwrap().to_bytes();
//! let text = String::from_utf8(body.to_vec()).unwrap();
//! assert!(text.starts_with("id: 0\nevent: run_started\n"));
//! assert!(text.contains("event: run_completed"));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod client;
mod handler;
mod io;
mod pool;
mod server;
mod signal;
mod timer;
mod tunnel;
mod write_timeout;

pub use body::AgentBody;

pub use client::{Connector, HyperClient, Target};
pub use handler::{handle_request, into_hyper};
pub use io::FuturesIo;
pub use server::{Listener, Server, serve_connection};
pub use timer::RuntimeTimer;
pub use tunnel::Tunnel;
pub use write_timeout::WriteTimeout;

/// The hyper this crate is built on, re-exported so that versions always match.
pub use hyper;

// The README's example is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
