//! The conformance suite every agent backend runs, and the kit it is built from.
//!
//! A backend (a runtime binding, an HTTP client and an HTTP server for the agent API) is
//! certified by implementing one trait, [`Backend`], and invoking one macro, [`suite!`],
//! which generates one `#[test]` per case. The cases prove, on that backend, that events
//! stream incrementally (by lockstep, never by timing), that nothing starves the executor,
//! that tools run concurrently, that cancellation and backpressure work, that every failure
//! ends with its documented terminal event, and that transcripts are identical to the
//! shared snapshots; and, for reliability, that upstream faults (resets, stalls, trickles,
//! oversized lines, endless streams, …) end with their documented outcome, that nothing a
//! run used is leaked (model streams, tool futures, connections, threads, sockets, counted
//! after the runs), that the server survives 1,000 sequential and 200 concurrent runs with
//! random disconnects, and that it enforces its limits. See [`cases`] for the list and the
//! book chapters "Adding a backend" and "Reliability".
//!
//! A backend for plain threads, in a few lines (the complete worked example is
//! `examples/futures_executor_backend.rs`):
//!
//! ```
//! use std::ops::ControlFlow;
//! use std::sync::Arc;
//! use futures_util::StreamExt;
//! use agent_core::agent::Agent;
//! use agent_core::event::Event;
//! use agent_core::runtime::{block_on, SharedRuntime, TestRuntime};
//! use conformance::kit::GatedModel;
//!
//! struct Threads;
//!
//! impl Threads {
//!     fn consume(&self, agent: &Agent, input: &str, on_event: &mut dyn FnMut(Event) -> ControlFlow<()>) {
//!         let mut run = agent.run(input);
//!         while let Some(event) = block_on(run.next()) {
//!             if on_event(event).is_break() {
//!                 return; // dropping `run` cancels it
//!             }
//!         }
//!     }
//! }
//!
//! // The lockstep model proves delivery one event at a time: delta k+1 exists only after
//! // the consumer saw delta k.
//! let model = GatedModel::numbered_lockstep(50);
//! let runtime: SharedRuntime = Arc::new(TestRuntime::new());
//! let agent = Agent::builder().model(model.clone()).runtime(runtime).build().unwrap();
//! let mut deltas = 0;
//! Threads.consume(&agent, "count", &mut |event| {
//!     if event.name() == "text_delta" {
//!         deltas += 1;
//!         model.gate().open_next();
//!     }
//!     ControlFlow::Continue(())
//! });
//! assert_eq!(deltas, 50);
//! ```
//!
//! The parts:
//!
//! * [`Backend`] / [`RunningServer`]: what a backend provides to the suite;
//! * [`suite!`]: the test generator; [`runner`] runs cases under the watchdog;
//! * [`cases`]: the cases, callable one by one;
//! * [`kit`]: the gated model, gated upstream, raw SSE client, probes, watchdog, transcript
//!   and redactions, resource and panic accounting, for writing more tests;
//! * [`report`]: the markdown matrix (this workspace writes its own with the
//!   `conformance-report` binary of its `test-support` crate).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
pub mod cases;
pub mod kit;
mod macros;
pub mod report;
pub mod runner;

pub use backend::{Backend, RunningServer};
