//! A process-wide panic counter: a panic hook, installed once, that counts every panic on
//! any thread (the backend's workers, its connection threads, the test's own) and keeps
//! the first few messages, then hands the panic on to the hook that was there before.
//!
//! Panics the suite provokes on purpose (tools that panic; their message contains
//! [`EXPECTED_PANIC_MARKER`]) are not counted. Like the resource counts, the number is
//! process-wide: the suite reads it in its exclusive cases, which run alone.
//!
//! ```
//! use conformance::kit::panics;
//!
//! panics::install();
//! let before = panics::count();
//! let _ = std::thread::spawn(|| panic!("boom")).join();
//! assert_eq!(panics::count(), before + 1);
//! assert!(panics::messages_since(before).iter().any(|m| m.contains("boom")));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

/// Marker in the message of panics the suite provokes on purpose (tool panics).
pub const EXPECTED_PANIC_MARKER: &str = "(expected by the conformance suite)";

/// Messages kept (the first ones; later panics are only counted).
const KEPT: usize = 32;

static INSTALL: Once = Once::new();
static COUNT: AtomicU64 = AtomicU64::new(0);
static MESSAGES: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());

/// Install the counting hook (once per process; later calls do nothing). The hook that was
/// installed before keeps running after it, so output is unchanged.
pub fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(a panic with a non-string payload)");
            if !message.contains(EXPECTED_PANIC_MARKER) {
                let n = COUNT.fetch_add(1, Ordering::AcqRel);
                let mut kept = MESSAGES.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() < KEPT {
                    let thread = std::thread::current();
                    let location = info
                        .location()
                        .map(|l| format!(" at {}:{}", l.file(), l.line()))
                        .unwrap_or_default();
                    kept.push((
                        n,
                        format!(
                            "thread '{}' panicked{location}: {message}",
                            thread.name().unwrap_or("<unnamed>")
                        ),
                    ));
                }
            }
            previous(info);
        }));
    });
}

/// Panics counted since [`install`] (0 before it).
pub fn count() -> u64 {
    COUNT.load(Ordering::Acquire)
}

/// The kept messages of the panics counted after the first `count` ones.
pub fn messages_since(count: u64) -> Vec<String> {
    MESSAGES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(n, _)| *n >= count)
        .map(|(_, m)| m.clone())
        .collect()
}
