//! Serve an agent over HTTP on plain threads.
//!
//! ```sh
//! cargo run -p backend-blocking --example threads_serve
//! curl -N -X POST http://127.0.0.1:8080/v1/runs \
//!   -H 'content-type: application/json' -d '{"input":"hi"}'
//! ```

use std::time::Duration;

use agent_core::model::{ScriptedModel, Turn};
use agent_core::server::ServerConfig;
use backend_blocking::ThreadServer;

fn main() -> std::io::Result<()> {
    // A scripted model that answers word by word, so streaming is visible in curl.
    let model = ScriptedModel::from_fn(|_, _| {
        Turn::new().words(
            "Hello from plain threads! Every word is its own event.",
            Duration::from_millis(150),
        )
    });
    let agent = backend_blocking::agent_builder()
        .instructions("Answer briefly.")
        .model(model)
        .build()
        .expect("a valid agent");

    let addr = std::env::var("AGENT_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let config = ServerConfig::default().with_addr(addr.parse().expect("AGENT_ADDR is host:port"));
    let server = ThreadServer::bind(agent, config)?;
    println!("listening on http://{}", server.local_addr());

    // Connections are served on their own threads; this one waits. Call
    // `server.shutdown_signal().trigger()` from another thread for a graceful shutdown.
    server.wait();
    Ok(())
}
