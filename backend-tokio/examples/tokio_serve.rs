//! Quickstart: serve an agent over HTTP with `TokioServer`.
//!
//! ```text
//! cargo run -p backend-tokio --example tokio_serve
//! curl -N http://127.0.0.1:8080/v1/runs -H 'content-type: application/json' -d '{"input":"hello"}'
//! ```
//!
//! `ADDR` sets the bind address (default `127.0.0.1:8080`), `AGENT_TOKEN` requires
//! `Authorization: Bearer <token>`. Ctrl-C shuts down gracefully.

use std::time::Duration;

use agent_core::model::{ScriptedModel, Turn};
use agent_core::server::ServerConfig;
use backend_tokio::TokioServer;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let agent = backend_tokio::agent_builder()
        // A scripted model (no API key needed) that answers every request word by word.
        .model(ScriptedModel::from_fn(|request, _| {
            let input = request.last_user_text().unwrap_or_default();
            Turn::new().words(
                &format!("You said \"{input}\". Every word is flushed as it is produced."),
                Duration::from_millis(200),
            )
        }))
        .build()
        .expect("a valid agent");

    let mut config = ServerConfig::default();
    if let Ok(addr) = std::env::var("ADDR") {
        config = config.with_addr(addr.parse().expect("ADDR must be host:port"));
    }
    if let Ok(token) = std::env::var("AGENT_TOKEN") {
        config = config.with_bearer_token(token);
    }

    let server = TokioServer::bind(agent, config).await?;
    println!("listening on http://{}", server.local_addr());
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}
