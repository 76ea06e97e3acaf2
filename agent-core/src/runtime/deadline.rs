//! [`Deadline`]: a timer whose deadline moves, for timeouts that restart on activity
//! (an idle stream's keep-alive, a model stream's inactivity timeout).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{BoxFuture, SharedRuntime};

/// A resettable deadline timer over a [`Runtime`](super::Runtime)'s clock and timers.
///
/// [`reset`](Self::reset) costs a store, not a timer: a stream that resets its timeout on
/// every event arms one runtime timer per timeout period, not one per event. When the armed
/// timer fires before the current deadline (the deadline moved later meanwhile), it is
/// re-armed for the remainder; a deadline moved earlier re-arms at once.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use agent_core::runtime::{block_on, Deadline, Runtime, SharedRuntime, TestRuntime};
///
/// let rt: SharedRuntime = Arc::new(TestRuntime::new());
/// let mut idle = Deadline::after(rt.clone(), Duration::from_millis(5));
/// idle.reset(rt.now() + Duration::from_millis(10)); // activity: the timeout starts over
/// block_on(&mut idle);
/// assert!(rt.now() >= idle.deadline());
/// ```
pub struct Deadline {
    runtime: SharedRuntime,
    deadline: Instant,
    /// The runtime timer in flight and the instant it was armed for.
    armed: Option<(Instant, BoxFuture<()>)>,
}

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline")
            .field("deadline", &self.deadline)
            .field("armed", &self.armed.as_ref().map(|(at, _)| at))
            .finish()
    }
}

impl Deadline {
    /// A timer firing at `deadline`. Nothing is armed before the first poll.
    pub fn new(runtime: SharedRuntime, deadline: Instant) -> Self {
        Deadline {
            runtime,
            deadline,
            armed: None,
        }
    }

    /// A timer firing `duration` from now (on the runtime's clock).
    pub fn after(runtime: SharedRuntime, duration: Duration) -> Self {
        let deadline = runtime.now() + duration;
        Deadline::new(runtime, deadline)
    }

    /// Move the deadline (later or earlier).
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if self.armed.as_ref().is_some_and(|(at, _)| *at > deadline) {
            // Armed too late for the new deadline: arm again on the next poll.
            self.armed = None;
        }
    }

    /// The runtime's clock ([`Runtime::now`](super::Runtime::now)), for the next deadline.
    pub fn runtime_now(&self) -> Instant {
        self.runtime.now()
    }

    /// The current deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// `Ready` once the runtime's clock has reached the deadline; otherwise a runtime timer
    /// is armed (at most one at a time) to wake `cx`.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let timer = match &mut self.armed {
                Some((_, timer)) => timer,
                None => {
                    if self.runtime.now() >= self.deadline {
                        return Poll::Ready(());
                    }
                    let timer = self.runtime.sleep_until(self.deadline);
                    &mut self.armed.insert((self.deadline, timer)).1
                }
            };
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // Fired: at the deadline, or early for a deadline that moved later (checked above).
            self.armed = None;
        }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().poll_expired(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::runtime::{BlockingJob, Runtime, TestRuntime, block_on};

    /// A thread runtime that counts the timers armed.
    #[derive(Debug, Default)]
    struct Counting {
        inner: TestRuntime,
        sleeps: AtomicUsize,
    }

    impl Runtime for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn spawn_blocking(&self, job: BlockingJob) {
            self.inner.spawn_blocking(job)
        }
        fn sleep(&self, duration: Duration) -> BoxFuture<()> {
            self.sleeps.fetch_add(1, Ordering::SeqCst);
            self.inner.sleep(duration)
        }
        fn spawn(&self, future: BoxFuture<()>) {
            self.inner.spawn(future)
        }
    }

    fn poll_once(deadline: &mut Deadline) -> Poll<()> {
        let waker = futures_util::task::noop_waker();
        deadline.poll_expired(&mut Context::from_waker(&waker))
    }

    #[test]
    fn resets_record_the_deadline_without_arming_a_timer_each() {
        let rt = Arc::new(Counting::default());
        let mut deadline = Deadline::after(rt.clone(), Duration::from_secs(60));
        assert!(poll_once(&mut deadline).is_pending());
        for i in 0..1000 {
            deadline.reset(rt.now() + Duration::from_secs(60 + i));
            assert!(poll_once(&mut deadline).is_pending());
        }
        assert_eq!(
            rt.sleeps.load(Ordering::SeqCst),
            1,
            "one timer armed for 1,000 later deadlines"
        );
    }

    #[test]
    fn a_deadline_moved_later_fires_after_the_new_one_and_earlier_at_once() {
        let rt = Arc::new(Counting::default());
        let mut deadline = Deadline::after(rt.clone(), Duration::from_millis(5));
        assert!(poll_once(&mut deadline).is_pending());
        let later = rt.now() + Duration::from_millis(30);
        deadline.reset(later);
        block_on(&mut deadline);
        assert!(
            rt.now() >= later,
            "fired no earlier than the moved deadline"
        );
        assert_eq!(
            rt.sleeps.load(Ordering::SeqCst),
            2,
            "re-armed once for the rest"
        );

        let mut far = Deadline::after(rt.clone(), Duration::from_secs(3600));
        assert!(poll_once(&mut far).is_pending());
        far.reset(rt.now());
        assert!(
            poll_once(&mut far).is_ready(),
            "a deadline moved to now has expired"
        );
    }
}
