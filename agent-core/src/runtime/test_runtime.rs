//! [`TestRuntime`]: the core's minimal runtime for tests, examples and docs (a thread per
//! task, a timer thread and a thread-parking `block_on`). It is not the blocking backend's
//! `ThreadPoolRuntime`, which is what a program on plain threads should use.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::{BlockingJob, BoxFuture, Runtime};

/// A minimal [`Runtime`] for tests, examples and docs, on plain OS threads, with no async
/// reactor; it reports its name as `"test-threads"`. For programs on plain threads, use
/// backend-blocking's `ThreadPoolRuntime` (bounded pool, name `"threads"`).
///
/// * `spawn_blocking` starts one OS thread per job;
/// * `sleep` registers with one process-wide timer thread;
/// * `spawn` drives the future on its own thread with [`block_on`].
///
/// It is meant for tests, examples and programs with few concurrent runs; the
/// `backend-blocking` crate adds a bounded pool on top of the same timer.
///
/// ```
/// use std::time::{Duration, Instant};
/// use agent_core::runtime::{block_on, Runtime, TestRuntime};
///
/// let rt = TestRuntime::new();
/// let start = Instant::now();
/// block_on(rt.sleep(Duration::from_millis(5)));
/// assert!(start.elapsed() >= Duration::from_millis(5));
/// ```
#[derive(Debug, Clone, Default)]
pub struct TestRuntime {
    _private: (),
}

impl TestRuntime {
    /// A new thread runtime. Cheap: threads are started on demand.
    pub fn new() -> Self {
        TestRuntime { _private: () }
    }
}

impl Runtime for TestRuntime {
    fn name(&self) -> &'static str {
        "test-threads"
    }

    fn spawn_blocking(&self, job: BlockingJob) {
        let spawned = std::thread::Builder::new()
            .name("agent-blocking".into())
            .spawn(job);
        // If the OS refuses a thread the job is dropped, which the awaiting side sees as
        // `TaskError::Cancelled`.
        drop(spawned);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(TimerSleep::new(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(TimerSleep::new(deadline))
    }

    fn spawn(&self, future: BoxFuture<()>) {
        let spawned = std::thread::Builder::new()
            .name("agent-task".into())
            .spawn(move || block_on(future));
        drop(spawned);
    }
}

/// Drive `future` to completion on the current thread, parking it while the future is pending.
///
/// This is not an executor: it runs exactly one future and spawns nothing. It is safe to call
/// from any thread, including one that belongs to another async runtime (it blocks that
/// thread, as any blocking call would).
///
/// ```
/// assert_eq!(agent_core::runtime::block_on(async { 1 + 1 }), 2);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    // Reuse this thread's unparker (no allocation per call: the blocking backend calls this
    // once per event). A nested call finds the slot empty and makes its own, so two calls
    // never share a wake-up flag.
    let unparker = CACHED_UNPARKER.with(|slot| slot.take()).unwrap_or_else(|| {
        Arc::new(ThreadUnparker {
            thread: std::thread::current(),
            notified: AtomicBool::new(false),
        })
    });
    let waker = Waker::from(unparker.clone());
    let mut cx = Context::from_waker(&waker);
    let value = loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            break value;
        }
        while !unparker.notified.swap(false, Ordering::Acquire) {
            std::thread::park();
        }
    };
    CACHED_UNPARKER.with(|slot| slot.set(Some(unparker)));
    value
}

thread_local! {
    static CACHED_UNPARKER: std::cell::Cell<Option<Arc<ThreadUnparker>>> =
        const { std::cell::Cell::new(None) };
}

struct ThreadUnparker {
    thread: Thread,
    notified: AtomicBool,
}

impl Wake for ThreadUnparker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notified.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// A timer future served by the process-wide timer thread.
///
/// Used by [`TestRuntime::sleep`]; public so other thread-based runtimes can share the
/// same timer thread instead of starting their own.
#[derive(Debug)]
pub struct TimerSleep {
    deadline: Instant,
    entry: Option<Arc<TimerEntry>>,
}

impl TimerSleep {
    /// A timer that completes at `deadline`.
    pub fn new(deadline: Instant) -> Self {
        TimerSleep {
            deadline,
            entry: None,
        }
    }
}

impl Future for TimerSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        match &self.entry {
            Some(entry) => {
                if entry.fired.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                *lock(&entry.waker) = Some(cx.waker().clone());
                // Re-check: the timer may have fired between the load and the store.
                if entry.fired.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
            }
            None => {
                let entry = Arc::new(TimerEntry {
                    fired: AtomicBool::new(false),
                    cancelled: AtomicBool::new(false),
                    waker: Mutex::new(Some(cx.waker().clone())),
                });
                timer_thread().register(self.deadline, entry.clone());
                self.entry = Some(entry);
            }
        }
        Poll::Pending
    }
}

impl Drop for TimerSleep {
    fn drop(&mut self) {
        if let Some(entry) = &self.entry
            && !entry.fired.load(Ordering::Acquire)
            && !entry.cancelled.swap(true, Ordering::AcqRel)
        {
            timer_thread().cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
struct TimerEntry {
    fired: AtomicBool,
    /// The `TimerSleep` was dropped before firing: the entry is garbage.
    cancelled: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

struct TimerThread {
    queue: Mutex<BinaryHeap<Reverse<Deadline>>>,
    changed: Condvar,
    /// Entries in `queue` whose timer was dropped before it fired (approximate).
    cancelled: std::sync::atomic::AtomicUsize,
}

/// Below this many queued timers, cancelled entries simply wait for their deadline.
const COMPACT_ABOVE: usize = 1024;

struct Deadline {
    at: Instant,
    entry: Arc<TimerEntry>,
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Deadline {}
impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn timer_thread() -> &'static TimerThread {
    static TIMER: OnceLock<&'static TimerThread> = OnceLock::new();
    TIMER.get_or_init(|| {
        let timer: &'static TimerThread = Box::leak(Box::new(TimerThread {
            queue: Mutex::new(BinaryHeap::new()),
            changed: Condvar::new(),
            cancelled: std::sync::atomic::AtomicUsize::new(0),
        }));
        std::thread::Builder::new()
            .name("agent-timer".into())
            .spawn(move || timer.run())
            .expect("failed to start the agent timer thread");
        timer
    })
}

impl TimerThread {
    fn register(&self, at: Instant, entry: Arc<TimerEntry>) {
        let mut queue = lock(&self.queue);
        // Timers dropped early (a timeout re-armed per event, say) would otherwise stay in the
        // heap until their deadline: drop them once they are the majority, so the heap stays
        // proportional to the live timers (amortised O(1) per registration).
        let cancelled = self.cancelled.load(Ordering::Relaxed);
        if queue.len() > COMPACT_ABOVE && cancelled * 2 > queue.len() {
            queue.retain(|Reverse(d)| !d.entry.cancelled.load(Ordering::Relaxed));
            self.cancelled.store(0, Ordering::Relaxed);
        }
        let earliest = queue.peek().map(|Reverse(d)| d.at);
        queue.push(Reverse(Deadline { at, entry }));
        if earliest.is_none_or(|e| at < e) {
            self.changed.notify_one();
        }
    }

    fn run(&self) {
        let mut due_wakers = Vec::new();
        let mut queue = lock(&self.queue);
        loop {
            let now = Instant::now();
            while queue.peek().is_some_and(|Reverse(d)| d.at <= now) {
                let Reverse(due) = queue.pop().expect("peeked");
                if due.entry.cancelled.load(Ordering::Relaxed) {
                    let _ =
                        self.cancelled
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            });
                    continue;
                }
                due.entry.fired.store(true, Ordering::Release);
                if let Some(waker) = lock(&due.entry.waker).take() {
                    due_wakers.push(waker);
                }
            }
            if !due_wakers.is_empty() {
                // Wake without holding the queue lock: a waker may register a new timer.
                drop(queue);
                due_wakers.drain(..).for_each(Waker::wake);
                queue = lock(&self.queue);
                continue;
            }
            // Entries whose future was dropped only hold an Arc; they expire harmlessly.
            queue = match queue.peek().map(|Reverse(d)| d.at) {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    self.changed
                        .wait_timeout(queue, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.changed.wait(queue).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_block_on_does_not_share_the_wake_flag() {
        let rt = TestRuntime::new();
        // The inner call waits for a timer while the outer future is mid-poll; then the outer
        // waits for its own timer. Sharing one flag could lose a wake-up and hang here.
        let value = block_on(async {
            let inner = block_on(async {
                rt.sleep(Duration::from_millis(2)).await;
                20
            });
            rt.sleep(Duration::from_millis(2)).await;
            inner + 22
        });
        assert_eq!(value, 42);
        // The cached unparker is reused by the next call on this thread.
        assert_eq!(block_on(async { 1 }), 1);
    }

    #[test]
    fn dropped_timers_do_not_pile_up_in_the_timer_heap() {
        let rt = TestRuntime::new();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        // A long timeout re-armed 20,000 times, as an inactivity timer per event would be.
        for _ in 0..20_000 {
            let mut sleep = rt.sleep(Duration::from_secs(3600));
            assert!(sleep.as_mut().poll(&mut cx).is_pending());
        }
        let queued = lock(&timer_thread().queue).len();
        assert!(
            queued <= 2 * COMPACT_ABOVE + 64,
            "{queued} timers queued; dropped ones should have been compacted away"
        );
        // Live timers still fire.
        block_on(rt.sleep(Duration::from_millis(1)));
    }
}
