//! What the bench reads about its process and its machine, from `/proc` (and `getrusage`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Resident set size of this process in bytes (`VmRSS`), 0 if unknown.
pub fn rss_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

/// Peak resident set size of this process in bytes (`VmHWM`), 0 if unknown.
pub fn peak_rss_bytes() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`): 100 on every Linux
/// architecture the bench runs on.
pub const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// CPU time (user + system) this process has used so far, in seconds, from
/// `/proc/self/stat` (10 ms resolution).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / CLOCK_TICKS_PER_SEC
}

/// CPU time (user + system) this process has used so far, in seconds, from
/// `getrusage(RUSAGE_SELF)`: microsecond resolution, threads that have exited included.
#[allow(unsafe_code)]
pub fn cpu_seconds_precise() -> f64 {
    // SAFETY: `getrusage` writes into the zeroed struct we own; nothing else is touched.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage` for the duration of the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return cpu_seconds();
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Nanoseconds since the Unix epoch: a clock shared by every process of the machine (used to
/// timestamp events across the server and loader processes).
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The soft limit on open files of this process (`ulimit -n`), if known.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A description of the machine for the report.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// CPU model name.
    pub cpu_model: String,
    /// Total memory in GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
    /// `ulimit -n`.
    pub open_files: Option<u64>,
    /// The date of the run (UTC, `YYYY-MM-DD`).
    pub date: String,
    /// The commit of the work tree, if git knows it.
    pub commit: Option<String>,
    /// `/proc/loadavg`'s 1-minute load when the run started (other work on the machine).
    pub load_at_start: String,
}

/// The 1-minute load average (`/proc/loadavg`), as written there.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

impl Machine {
    /// Look at this machine.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let rustc = command_output("rustc", &["--version"]).unwrap_or_else(|| "unknown".into());
        let commit = command_output("git", &["rev-parse", "--short", "HEAD"]);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib: mem_kib / (1024.0 * 1024.0),
            kernel,
            rustc,
            open_files: open_files_limit(),
            date: today_utc(),
            commit,
            load_at_start: load_average(),
        }
    }
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Today's date in UTC as `YYYY-MM-DD` (civil-from-days, no date library).
fn today_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_proc() {
        assert!(super::rss_bytes() > 0);
        assert!(super::peak_rss_bytes() >= super::rss_bytes() / 2);
        assert!(super::cpu_seconds() >= 0.0);
        assert_eq!(super::today_utc().len(), 10);
    }
}
