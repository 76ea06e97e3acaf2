//! The public kit: the building blocks of the suite, usable on their own to test a backend
//! (or anything else that streams).
//!
//! | piece | what it proves |
//! |---|---|
//! | [`Gate`] | lockstep: chunk `k + 1` exists only after the test observed chunk `k` |
//! | [`GatedModel`] | the agent and the backend deliver model deltas one by one |
//! | [`GatedUpstream`] | the backend's HTTP client delivers body chunks as they arrive, closes on drop, survives faults |
//! | [`SseClient`] | the backend's server writes and flushes every frame at once |
//! | [`Heartbeat`] | the executor keeps running other tasks (no starvation) |
//! | [`DropCounter`] | cancelled futures and discarded results are really dropped |
//! | [`CountedModel`] | every model stream a run started was dropped (nothing leaked) |
//! | [`watchdog`] | a stuck case fails naming its last step instead of hanging |
//! | [`Transcript`] | the event contract (`seq`, one terminal event, nothing after it) |
//! | [`redact`] | transcripts compare equal across backends (timings, ids, ports) |
//! | [`tools`] | gated, panicking and sleeping tools for the tool cases |
//! | [`resources`] | threads, open fds and resident memory return to their baseline (no leak) |
//! | [`panics`] | no panic happened anywhere in the process |
//! | [`XorShift`] | seeded randomness (the soak's disconnect points) that reproduces |
//! | [`http`] | an agent server and HTTP client (hyper, through `agent-hyper`) for backends that bring none |
//! | [`sockets`] | std sockets as `futures-io` streams, for executors without a reactor |
//! | [`mcp`] | a fake MCP server (stdio, Python standard library) for the MCP cases |
//!
//! Everything here is built on std threads, std sync primitives and [`std::task::Waker`]s,
//! so it works with any executor and with plain threads.

pub mod client;
mod gate;
mod gated_model;
pub mod http;
pub mod mcp;
pub mod panics;
mod probe;
pub mod proxy;
pub mod redact;
pub mod resources;
mod rng;
pub mod sockets;
pub mod tools;
mod transcript;
pub mod upstream;
pub mod watchdog;

pub use client::{RawResponse, SseClient};
pub use gate::{Gate, GateWait};
pub use gated_model::{DEFAULT_GATE_DEADLINE, GatedModel, numbered_delta};
pub use probe::{CountedModel, DropCounter, DropGuard, Heartbeat, StreamCounts};
pub use rng::XorShift;
pub use transcript::Transcript;
pub use upstream::GatedUpstream;
