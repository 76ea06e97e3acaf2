//! Measurements that run in a child process of their own (a fresh heap, so that resident
//! memory and peak memory belong to what is measured): `bench __child <what> <args…>`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A child process speaking a line protocol on its stdin and stdout.
pub struct ChildProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ChildProcess {
    /// Start `bench __child args…`.
    pub fn spawn(args: &[String]) -> std::io::Result<ChildProcess> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("__child")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Ok(ChildProcess {
            child,
            stdin,
            stdout,
        })
    }

    /// Read the next line the child prints (empty at end of output).
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        line.trim().to_string()
    }

    /// Send one command line and read the answer line.
    pub fn ask(&mut self, command: &str) -> String {
        let _ = writeln!(self.stdin, "{command}");
        let _ = self.stdin.flush();
        self.read_line()
    }

    /// Send one command line without waiting for an answer.
    pub fn tell(&mut self, command: &str) {
        let _ = writeln!(self.stdin, "{command}");
        let _ = self.stdin.flush();
    }

    /// Wait for the child to exit (it is killed after `timeout`).
    pub fn finish(mut self, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }
}

/// Run as a child: dispatch on the first argument. Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("fanout-server") => crate::fanout::server_child(&args[1..]),
        Some("relay-server") => crate::relay::server_child(&args[1..]),
        Some("scale") => crate::scale::child(&args[1..]),
        other => {
            eprintln!("unknown child command {other:?}");
            2
        }
    }
}
