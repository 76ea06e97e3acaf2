//! Process-wide resource accounting: threads, open file descriptors (sockets included) and
//! resident memory, read from `/proc/self` (Linux).
//!
//! The counts are of the whole process, so they only mean something while nothing else runs
//! in it: the suite takes them in its *exclusive* cases, which the runner runs alone (see
//! [`runner`](crate::runner)). The pattern is: warm the backend up (so that the thread pools
//! it keeps by design are started), [`settle`] and take the baseline, do the runs under
//! test, drop them, then [`wait_for_release`] until the counts are back within a
//! [`Tolerance`] of the baseline (or fail naming what grew).
//!
//! ```
//! use std::time::Duration;
//! use conformance::kit::resources::{self, Tolerance, Usage};
//!
//! if let Some(baseline) = resources::settle(Duration::from_millis(20), Duration::from_secs(1)) {
//!     let worker = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(10)));
//!     worker.join().unwrap();
//!     let after = resources::wait_for_release(&baseline, Tolerance::EXACT, Duration::from_secs(5), || {});
//!     assert!(after.is_ok(), "{}", after.unwrap_err());
//! }
//! # let _ = Usage::now();
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::time::{Duration, Instant};

/// What the process holds at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Threads (`/proc/self/task`).
    pub threads: usize,
    /// Open file descriptors (`/proc/self/fd`): sockets, pipes, epoll instances, files.
    pub fds: usize,
    /// Resident memory in KiB (`VmRSS` of `/proc/self/status`).
    pub rss_kib: u64,
}

impl Usage {
    /// The current usage; `None` where `/proc/self` is not available (not Linux).
    pub fn now() -> Option<Usage> {
        Some(Usage {
            threads: count_entries("/proc/self/task")?,
            // The directory handle used to list the fds is one of them, in every sample alike.
            fds: count_entries("/proc/self/fd")?,
            rss_kib: status_kib("VmRSS")?,
        })
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} threads, {} fds, {} KiB resident",
            self.threads, self.fds, self.rss_kib
        )
    }
}

fn count_entries(dir: &str) -> Option<usize> {
    Some(fs::read_dir(dir).ok()?.count())
}

fn status_kib(field: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Threads by name (`/proc/self/task/*/comm`), for failure messages.
pub fn thread_names() -> BTreeMap<String, usize> {
    let mut names = BTreeMap::new();
    if let Ok(tasks) = fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let name = fs::read_to_string(task.path().join("comm"))
                .map(|n| n.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            *names.entry(name).or_insert(0) += 1;
        }
    }
    names
}

/// Open file descriptors by kind (`socket`, `anon_inode:[eventpoll]`, `pipe`, a path…), for
/// failure messages.
pub fn fd_kinds() -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    if let Ok(fds) = fs::read_dir("/proc/self/fd") {
        for fd in fds.flatten() {
            let target = fs::read_link(fd.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "?".into());
            // `socket:[123]` → `socket`, `pipe:[45]` → `pipe`; keep other targets whole.
            let kind = match target.split_once(":[") {
                Some((kind, _)) if kind == "socket" || kind == "pipe" => kind.to_string(),
                _ => target,
            };
            *kinds.entry(kind).or_insert(0) += 1;
        }
    }
    kinds
}

/// Reset the peak resident memory (`VmHWM`) to the current value, by writing `5` to
/// `/proc/self/clear_refs`; `false` where that is not allowed.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The peak resident memory in KiB since the process started or the last
/// [`reset_peak_rss`] (`VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM")
}

/// Wait until the thread and fd counts have not changed for `stable_for` (sampled every
/// 5 ms), at most `max`; returns the last sample. Use it to take a baseline once whatever was
/// dropped before has finished closing.
pub fn settle(stable_for: Duration, max: Duration) -> Option<Usage> {
    let deadline = Instant::now() + max;
    let mut last = Usage::now()?;
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let now = Usage::now()?;
        if (now.threads, now.fds) != (last.threads, last.fds) {
            since = Instant::now();
        }
        last = now;
        if since.elapsed() >= stable_for || Instant::now() >= deadline {
            return Some(last);
        }
    }
}

/// How far above the baseline the process may stay after the runs under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tolerance {
    /// Extra threads (pools the backend keeps warm by design may grow by one or two).
    pub threads: usize,
    /// Extra file descriptors.
    pub fds: usize,
    /// Extra resident memory in KiB; `None` does not check memory.
    pub rss_kib: Option<u64>,
}

impl Tolerance {
    /// Nothing extra, memory not checked.
    pub const EXACT: Tolerance = Tolerance {
        threads: 0,
        fds: 0,
        rss_kib: None,
    };
}

/// Poll (every 10 ms, calling `between` before each sample) until `threads`, `fds` and,
/// when checked, resident memory are within `tolerance` of `baseline`, at most `deadline`.
///
/// `Ok` with the usage that satisfied the bound; `Err` with a message naming what stayed
/// above it (threads by name and fds by kind that grew) otherwise. Where `/proc` is not
/// available it returns `Ok` with the baseline.
pub fn wait_for_release(
    baseline: &Usage,
    tolerance: Tolerance,
    deadline: Duration,
    mut between: impl FnMut(),
) -> Result<Usage, String> {
    let until = Instant::now() + deadline;
    let within = |u: &Usage| {
        u.threads <= baseline.threads + tolerance.threads
            && u.fds <= baseline.fds + tolerance.fds
            && tolerance
                .rss_kib
                .is_none_or(|extra| u.rss_kib <= baseline.rss_kib + extra)
    };
    loop {
        let Some(now) = Usage::now() else {
            return Ok(*baseline);
        };
        if within(&now) {
            return Ok(now);
        }
        if Instant::now() >= until {
            return Err(format!(
                "not released within {deadline:?}: {now} now, baseline {baseline} (allowed: +{} threads, +{} fds{}); threads by name now: {}; fds by kind now: {}",
                tolerance.threads,
                tolerance.fds,
                tolerance
                    .rss_kib
                    .map(|k| format!(", +{k} KiB resident"))
                    .unwrap_or_default(),
                render(&thread_names()),
                render(&fd_kinds()),
            ));
        }
        between();
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn render(counts: &BTreeMap<String, usize>) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
    parts.join(", ")
}
