//! Everything on one thread: an executor of your own, an agent, its HTTP server, and a
//! client streaming from that server — then a graceful shutdown.
//!
//! ```text
//! cargo run -p backend-smol --example smol_single_thread
//! ```

use std::sync::Arc;

use agent_core::http::{HttpClient, HttpRequest, Method};
use agent_core::model::{ScriptedModel, Turn};
use agent_core::server::ServerConfig;
use backend_smol::async_executor::Executor;
use backend_smol::{SmolClient, SmolRuntime, SmolServer};
use futures_lite::StreamExt;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One executor, run by this thread only: tasks spawned on it interleave with `main`'s
    // future and never run in parallel.
    let executor = Arc::new(Executor::new());
    let runtime = SmolRuntime::with_executor(executor);

    let agent = backend_smol::agent_builder()
        .runtime(runtime.shared())
        .model(ScriptedModel::from_fn(|_, _| {
            Turn::new().text("Hello ").text("from ").text("one thread.")
        }))
        .build()?;

    runtime.block_on(async {
        // The server's accept loop and connections are tasks on our executor.
        let config = ServerConfig::default().with_addr("127.0.0.1:0".parse()?);
        let server = SmolServer::bind(agent.clone(), config)?;
        let url = format!("http://{}/v1/runs", server.local_addr());

        // Stream a run from our own server: each SSE frame is printed as it arrives.
        let request = HttpRequest::new(Method::Post, url)
            .header("content-type", "application/json")
            .body(br#"{"input":"hi"}"#.to_vec());
        let mut response = SmolClient::new().send(request).await?;
        println!("HTTP {}", response.status);
        while let Some(chunk) = response.body.next().await {
            print!("{}", String::from_utf8_lossy(&chunk?));
        }

        // Or consume a run directly, without HTTP.
        let mut run = agent.run("hi again");
        while let Some(event) = run.next().await {
            println!("event {} {}", event.seq, event.name());
        }

        server.shutdown().await;
        Ok(())
    })
}
