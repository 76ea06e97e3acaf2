//! What the `agent` binary's process tests share: a command with a clean environment, a run
//! with a deadline, and an `agent serve` whose address is read from its stderr.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Every runtime the binary offers (`--runtime`).
pub const RUNTIMES: [&str; 3] = ["tokio", "smol", "blocking"];

/// How long a process may take to finish before a test kills it and fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Remove what the developer's shell may hold (API keys, the serve token) and serve from
/// memory: `serve` would default to a SQLite file in the user's data directory, one process
/// at a time (tests/stores.rs covers the stores and removes `AGENT_STORE` again).
pub fn clean_env(command: &mut Command) -> &mut Command {
    command
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("AGENT_SERVE_TOKEN")
        .env("AGENT_STORE", "memory")
        .stdin(Stdio::null())
}

/// The binary with a clean environment (see [`clean_env`]).
pub fn agent() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agent"));
    clean_env(&mut command);
    command
}

/// Run to completion, killed if it takes longer than [`DEADLINE`].
pub fn run(command: &mut Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the agent binary starts");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("the output");
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let output = child.wait_with_output().expect("the output");
            panic!(
                "agent did not finish within {DEADLINE:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait for `child` to exit by itself, killed (and the test failed) after [`DEADLINE`].
pub fn wait_with_deadline(child: &mut Child) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("the agent did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lossy UTF-8, for output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Send `signal` (`"INT"`, `"TERM"`) to `child`.
pub fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -{signal} failed");
}

/// A running `agent serve` (or a wrapper that execs it), killed when dropped.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
    /// The lines of its stderr after the one with the address.
    pub log: mpsc::Receiver<String>,
}

impl Served {
    /// Start `command` (stdout to nowhere, stderr piped) and wait up to `within` for the
    /// line `serving on http://ADDR`; the test fails, with the lines seen, without one.
    pub fn start(command: &mut Command, within: Duration) -> Served {
        let what = format!("{command:?}");
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agent serve starts");
        let stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut seen = Vec::new();
        let addr = loop {
            let left = within.saturating_sub(started.elapsed());
            let Ok(line) = log.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} printed no address within {within:?}: {seen:?}");
            };
            if let Some(rest) = line.split("serving on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr
                    .parse()
                    .unwrap_or_else(|e| panic!("agent serve printed {line:?}: {e}"));
            }
            seen.push(line);
        };
        Served { child, addr, log }
    }

    /// The stderr lines printed so far (since the address, or the last call).
    pub fn lines(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// SIGKILL: the process gets no chance to end its runs.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
