//! [`RuntimeTimer`]: hyper's [`Timer`] on the core's [`Runtime`](agent_core::runtime::Runtime).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use agent_core::runtime::{BoxFuture, SharedRuntime};
use hyper::rt::{Sleep, Timer};

/// hyper's [`Timer`] backed by [`Runtime::sleep`](agent_core::runtime::Runtime::sleep), so
/// that every backend's timers (hyper's header read timeout, the write timeout, the body
/// deadline) come from the one runtime it already has.
///
/// A sleep fires once its duration has passed, never before; dropping it cancels it.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use agent_core::runtime::{block_on, TestRuntime};
/// use agent_hyper::hyper::rt::Timer;
///
/// let timer = agent_hyper::RuntimeTimer::new(Arc::new(TestRuntime::new()));
/// let started = std::time::Instant::now();
/// block_on(timer.sleep(Duration::from_millis(5)));
/// assert!(started.elapsed() >= Duration::from_millis(5));
/// ```
#[derive(Clone)]
pub struct RuntimeTimer {
    runtime: SharedRuntime,
}

impl RuntimeTimer {
    /// A timer on `runtime`.
    pub fn new(runtime: SharedRuntime) -> Self {
        RuntimeTimer { runtime }
    }

    /// The runtime it sleeps on.
    pub fn runtime(&self) -> &SharedRuntime {
        &self.runtime
    }
}

impl fmt::Debug for RuntimeTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeTimer")
            .field("runtime", &self.runtime.name())
            .finish()
    }
}

impl Timer for RuntimeTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(RuntimeSleep {
            // hyper's `Sleep` must be `Sync`; the runtime's future is only `Send`. It is only
            // ever polled through `&mut`, so the lock is never contended.
            inner: Mutex::new(self.runtime.sleep(duration)),
        })
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        self.sleep(deadline.saturating_duration_since(Instant::now()))
    }
}

struct RuntimeSleep {
    inner: Mutex<BoxFuture<()>>,
}

impl Future for RuntimeSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let inner = this
            .inner
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.as_mut().poll(cx)
    }
}

impl Sleep for RuntimeSleep {}
