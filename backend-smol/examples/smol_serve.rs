//! Serve an agent over HTTP on smol's global executor.
//!
//! ```text
//! cargo run -p backend-smol --example smol_serve
//! curl -N -X POST http://127.0.0.1:8080/v1/runs -H 'content-type: application/json' -d '{"input":"hi"}'
//! ```
//!
//! Set `AGENT_ADDR` to listen elsewhere (default `127.0.0.1:8080`).

use std::time::Duration;

use agent_core::model::{ScriptedModel, Turn};
use agent_core::server::ServerConfig;
use backend_smol::SmolServer;

fn main() -> std::io::Result<()> {
    // A scripted model that answers word by word, so streaming is visible in curl.
    let model = ScriptedModel::from_fn(|_, _| {
        Turn::new().words(
            "Hello from smol! Every word is its own event.",
            Duration::from_millis(150),
        )
    });
    let agent = backend_smol::agent_builder()
        .instructions("Answer briefly.")
        .model(model)
        .build()
        .expect("a valid agent");

    let addr = std::env::var("AGENT_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let config = ServerConfig::default().with_addr(addr.parse().expect("AGENT_ADDR is host:port"));
    let server = SmolServer::bind(agent, config)?;
    println!("listening on http://{}", server.local_addr());

    // The server's tasks run on smol's global executor threads; this thread just waits.
    smol::block_on(std::future::pending::<()>());
    Ok(())
}
