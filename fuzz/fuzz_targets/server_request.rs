//! Any request — method, path, headers, body — gets a response (a 4xx JSON error for bad
//! ones) and never a panic; a stream that starts always ends with a terminal frame.
#![no_main]

use std::sync::{Arc, OnceLock};

use agent_core::agent::Agent;
use agent_core::model::{ScriptedModel, Turn};
use agent_core::runtime::{TestRuntime, block_on};
use agent_core::server::{AgentService, ApiBody, ServerConfig};
use futures_util::StreamExt;
use libfuzzer_sys::fuzz_target;

fn service() -> &'static AgentService {
    static SERVICE: OnceLock<AgentService> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let agent = Agent::builder()
            .model(ScriptedModel::from_fn(|_, _| Turn::new().text("ok")))
            .runtime(Arc::new(TestRuntime::new()))
            .build()
            .unwrap();
        AgentService::new(
            agent,
            ServerConfig::default().with_bearer_token("t").with_max_body_bytes(4096),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let path = ["/v1/runs", "/v1/chat/completions", "/healthz", "/nope"][usize::from(selector % 4)];
    let method = if selector & 4 == 0 { "POST" } else { "GET" };
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if selector & 8 == 0 {
        headers.push(("authorization", "Bearer t"));
    }
    if selector & 16 == 0 {
        headers.push(("content-type", "application/json"));
    }
    let response = block_on(service().handle(method, path, &headers, body));
    assert!((200..600).contains(&response.status));
    match response.body {
        ApiBody::Full(bytes) => {
            let _: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON body");
        }
        ApiBody::Stream(stream) => {
            let frames: Vec<_> = block_on(stream.collect());
            let text = String::from_utf8(frames.concat()).expect("UTF-8 frames");
            assert!(
                text.contains("run_completed") || text.contains("[DONE]"),
                "the stream ended without a terminal frame: {text}"
            );
        }
    }
});
