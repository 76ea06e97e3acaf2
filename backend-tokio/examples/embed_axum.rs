//! An existing axum application with its own routes, and the agent API nested under
//! `/agent`. The agent uses a scripted model, so this runs without an API key.
//!
//! ```text
//! cargo run -p backend-tokio --example embed_axum
//! curl http://127.0.0.1:3000/
//! curl -N http://127.0.0.1:3000/agent/v1/runs -H 'content-type: application/json' -d '{"input":"hello"}'
//! ```
//!
//! Set `ADDR` to listen elsewhere (default `127.0.0.1:3000`). Ctrl-C stops it gracefully:
//! open streams end with `run_cancelled`.

use std::time::Duration;

use agent_core::model::{ScriptedModel, Turn};
use agent_core::server::{AgentService, ServerConfig};
use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // The agent: a scripted model that streams its answer word by word.
    let agent = backend_tokio::agent_builder()
        .instructions("You are a friendly demo agent.")
        .model(ScriptedModel::from_fn(|request, _| {
            let input = request.last_user_text().unwrap_or_default();
            Turn::new().words(
                &format!("Hello from the agent inside your axum app! You said \"{input}\"."),
                Duration::from_millis(150),
            )
        }))
        .build()
        .expect("a valid agent");
    let service = AgentService::new(agent, ServerConfig::default());

    // Your application, with the agent API under /agent.
    let app = Router::new()
        .route("/", get(|| async { "my existing app\n" }))
        .route("/status", get(|| async { "all good\n" }))
        .nest("/agent", backend_tokio::router(service.clone()));

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    // TCP_NODELAY: each event is a small write that must not wait for Nagle's algorithm.
    let listener = tokio::net::TcpListener::bind(&addr).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    println!("listening on http://{addr} (agent API under /agent)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            // End open streams with `run_cancelled` so connections can close.
            service.shutdown();
        })
        .await
}
