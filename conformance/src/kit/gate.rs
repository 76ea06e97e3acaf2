//! [`Gate`]: the lockstep primitive shared by the gated model, the gated upstream and the
//! gated tools.
//!
//! A gate is a counter that only the test side raises. A producer that wants to emit its
//! chunk `n` first waits until the gate has been opened `n` times; the test opens it once
//! each time it has *observed* the chunk before. A backend that buffers output therefore
//! deadlocks instead of passing, and the producer's deadline turns the deadlock into an
//! error naming the chunk that never arrived.
//!
//! A gate works with any executor and with plain threads: waiting is either a future
//! ([`Gate::wait`], woken through [`std::task::Waker`]s) or a blocking call with a deadline
//! ([`Gate::wait_blocking`]).
//!
//! ```
//! use std::time::Duration;
//! use conformance::kit::Gate;
//!
//! let gate = Gate::new("demo");
//! assert!(!gate.wait_blocking(1, Duration::from_millis(1)));
//! gate.open_next();
//! assert!(gate.wait_blocking(1, Duration::from_millis(1)));
//! assert_eq!(gate.opened(), 1);
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A counter raised by the test side; producers wait until it reaches their step.
pub struct Gate {
    name: String,
    state: Mutex<GateState>,
    changed: Condvar,
}

struct GateState {
    opened: u64,
    wakers: Vec<Waker>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("name", &self.name)
            .field("opened", &self.opened())
            .finish()
    }
}

impl Gate {
    /// A closed gate (opened 0 times). `name` appears in failure messages.
    pub fn new(name: impl Into<String>) -> Arc<Gate> {
        Arc::new(Gate {
            name: name.into(),
            state: Mutex::new(GateState {
                opened: 0,
                wakers: Vec::new(),
            }),
            changed: Condvar::new(),
        })
    }

    /// The name given at construction.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many times the gate has been opened.
    pub fn opened(&self) -> u64 {
        lock(&self.state).opened
    }

    /// `true` once the gate has been opened at least `n` times (always for `n == 0`).
    pub fn is_open(&self, n: u64) -> bool {
        self.opened() >= n
    }

    /// Open the gate once more (release the next step); returns the new count.
    pub fn open_next(&self) -> u64 {
        self.update(|opened| opened.saturating_add(1))
    }

    /// Make sure the gate has been opened at least `n` times.
    pub fn open_to(&self, n: u64) {
        self.update(|opened| opened.max(n));
    }

    /// Open the gate for good: every step may proceed.
    pub fn open_all(&self) {
        self.update(|_| u64::MAX);
    }

    fn update(&self, f: impl FnOnce(u64) -> u64) -> u64 {
        let wakers = {
            let mut state = lock(&self.state);
            state.opened = f(state.opened);
            self.changed.notify_all();
            (state.opened, std::mem::take(&mut state.wakers))
        };
        let (opened, wakers) = wakers;
        wakers.into_iter().for_each(Waker::wake);
        opened
    }

    /// Block the calling thread until the gate has been opened `n` times or `timeout`
    /// passes; `true` when it was opened.
    pub fn wait_blocking(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.state);
        while state.opened < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Poll for step `n`: `Ready` once the gate has been opened `n` times, else `Pending`
    /// with `cx`'s waker registered.
    pub fn poll_open(&self, n: u64, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.state);
        if state.opened >= n {
            return Poll::Ready(());
        }
        if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            state.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// A future that completes once the gate has been opened `n` times.
    pub fn wait(self: &Arc<Self>, n: u64) -> GateWait {
        GateWait {
            gate: self.clone(),
            n,
        }
    }
}

/// The future returned by [`Gate::wait`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct GateWait {
    gate: Arc<Gate>,
    n: u64,
}

impl Future for GateWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.gate.poll_open(self.n, cx)
    }
}
