//! A fake MCP server for the MCP cases: a stdio server in Python (standard library only),
//! shipped inside this crate and written to a temporary file on first use.
//!
//! Its tools answer, fail, exit mid-call, write malformed or oversized lines, never answer,
//! and report every message they received (`received`); the script's docstring lists them.
//!
//! ```
//! use conformance::kit::mcp;
//! assert!(mcp::FAKE_MCP_SERVER_PY.contains("def main()"));
//! // `python3` found (or AGENT_MCP_PYTHON set): a command that starts the fake server.
//! if let Ok(command) = mcp::fake_server_command() {
//!     assert!(command.args[0].ends_with("fake_mcp_server.py"));
//! }
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use agent_core::process::ProcessCommand;

use crate::backend::Backend;

/// The fake server's source.
pub const FAKE_MCP_SERVER_PY: &str = include_str!("fake_mcp_server.py");

/// The Python interpreter: `AGENT_MCP_PYTHON` if set, else `python3` if it runs.
pub fn python() -> Option<String> {
    static PYTHON: OnceLock<Option<String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let candidate = std::env::var("AGENT_MCP_PYTHON").unwrap_or_else(|_| "python3".into());
            let runs = Command::new(&candidate)
                .arg("--version")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            runs.then_some(candidate)
        })
        .clone()
}

/// The path of the fake server script (written to the temporary directory once per
/// process).
pub fn fake_server_script() -> Result<PathBuf, String> {
    static SCRIPT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SCRIPT
        .get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("agent-conformance-mcp-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let path = dir.join("fake_mcp_server.py");
            std::fs::write(&path, FAKE_MCP_SERVER_PY)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok(path)
        })
        .clone()
}

/// The command starting the fake server, or why it cannot run here (no Python).
pub fn fake_server_command() -> Result<ProcessCommand, String> {
    let python = python().ok_or_else(|| {
        "the fake MCP server needs python3 (or AGENT_MCP_PYTHON); none runs here".to_owned()
    })?;
    let script = fake_server_script()?;
    Ok(ProcessCommand::new(python).arg(script.to_string_lossy()))
}

/// Run `future` to completion through [`Backend::block_on`] (the backend's I/O driven
/// meanwhile) and return its output: how a test connects to an MCP server outside a run.
pub fn block_on<T: Send + 'static>(
    backend: &dyn Backend,
    future: impl Future<Output = T> + Send + 'static,
) -> T {
    let slot = Arc::new(Mutex::new(None));
    let out = slot.clone();
    backend.block_on(Box::pin(async move {
        let value = future.await;
        *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
    }));
    let value = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    value.expect("mcp: Backend::block_on must run the future to completion")
}
