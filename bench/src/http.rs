//! (2) HTTP end to end: a local upstream streams OpenAI chunks as fast as it can; each
//! backend's client + `OpenAiModel` + agent against the floor (reqwest + the core's SSE
//! decoder, no agent) and against async-openai.

use std::sync::Arc;
use std::time::Instant;

use agent_core::event::EventKind;
use agent_core::model::{ModelDelta, OpenAiConfig, OpenAiModel};
use agent_core::policy::RetryPolicy;
use agent_core::sse::{SseDecoder, SseItem};
use backend_tokio::reqwest;
use futures_util::StreamExt;

use crate::config::Config;
use crate::exec::{Exec, Flavor};
use crate::stats::{Samples, Summary};
use crate::upstream::{MODEL, Script, Upstream};

/// One contender of the HTTP measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// reqwest + eventsource-stream + typed serde: what a minimal real client does; the floor.
    FloorReal,
    /// reqwest + `SseDecoder`, counting events: the decoder-only floor.
    FloorSse,
    /// The floor plus the core's chunk parser (`OpenAiModel::parse_chunk`) per event.
    FloorParse,
    /// async-openai's `chat().create_stream`.
    AsyncOpenAi,
    /// The backend's own `HttpClient` + `SseDecoder`, counting events (no agent, no parse).
    ClientFloor(Flavor),
    /// A backend: its client, `OpenAiModel` and the agent.
    Backend(Flavor),
    /// A tokio flavor with `TokioClient` (hyper driven by the polling task) instead of
    /// `ReqwestClient`.
    TokioClient(Flavor),
}

impl Contender {
    /// The row label.
    pub fn label(self) -> String {
        match self {
            Contender::FloorReal => {
                "floor: reqwest + eventsource-stream + serde (a minimal client)".into()
            }
            Contender::FloorSse => "decoder-only floor: reqwest + SseDecoder (events only)".into(),
            Contender::FloorParse => "floor + chunk JSON parse (`parse_chunk`)".into(),
            Contender::AsyncOpenAi => "async-openai 0.43 (`create_stream`)".into(),
            Contender::ClientFloor(flavor) => format!(
                "{} + SseDecoder on {} (no agent)",
                client_name(flavor),
                flavor.label()
            ),
            Contender::Backend(flavor) => format!("agent on {}", flavor.label()),
            Contender::TokioClient(flavor) => {
                format!("agent on {} with `TokioClient`", flavor.label())
            }
        }
    }
}

/// The name of a flavor's HTTP client.
pub fn client_name(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::TokioCurrent | Flavor::TokioMulti | Flavor::TokioMultiBlockOn => "ReqwestClient",
        Flavor::SmolSingle => "SmolClient",
        Flavor::Blocking => "UreqClient",
    }
}

/// The result of the HTTP measurement.
pub struct HttpResult {
    /// Chunks per response.
    pub chunks: usize,
    /// Bytes per response (head and chunked framing included).
    pub response_bytes: usize,
    /// Repetitions per contender.
    pub reps: usize,
    /// Text deltas per second, per contender.
    pub rows: Vec<(Contender, Summary)>,
}

/// Everything one repetition needs, built once.
struct Setup {
    base_url: String,
    floor_rt: tokio::runtime::Runtime,
    reqwest: reqwest::Client,
    openai: async_openai::Client<async_openai::config::OpenAIConfig>,
    backends: Vec<(Exec, agent_core::agent::Agent)>,
    /// The tokio flavors' agents on `TokioClient`, by index into `backends`.
    tokio_client: Vec<(usize, agent_core::agent::Agent)>,
}

pub fn chat_body() -> Vec<u8> {
    format!(r#"{{"model":"{MODEL}","stream":true,"messages":[{{"role":"user","content":"go"}}]}}"#)
        .into_bytes()
}

/// reqwest + SseDecoder; with `parse`, also the core's chunk parser. Returns text deltas.
fn floor(setup: &Setup, parse: bool) -> usize {
    let url = format!("{}/chat/completions", setup.base_url);
    let client = setup.reqwest.clone();
    setup.floor_rt.block_on(async move {
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .body(chat_body())
            .send()
            .await
            .expect("floor request");
        let mut body = response.bytes_stream();
        let mut decoder = SseDecoder::new();
        let mut texts = 0usize;
        let mut handle = |decoder: &mut SseDecoder| {
            while let Some(item) = decoder.next_item() {
                if let Ok(SseItem::Event(event)) = item {
                    if event.data == "[DONE]" {
                        continue;
                    }
                    if parse {
                        let deltas = OpenAiModel::parse_chunk(&event.data).expect("chunk");
                        texts += deltas
                            .iter()
                            .filter(|d| matches!(d, ModelDelta::Text(_)))
                            .count();
                    } else if event.data.contains("\"content\"") {
                        texts += 1;
                    }
                }
            }
        };
        while let Some(chunk) = body.next().await {
            decoder.push(&chunk.expect("floor body"));
            handle(&mut decoder);
        }
        decoder.finish();
        handle(&mut decoder);
        texts
    })
}

/// The typed part of a `chat.completion.chunk` a minimal client deserializes.
#[derive(serde::Deserialize)]
struct FloorChunk {
    #[serde(default)]
    choices: Vec<FloorChoice>,
}

#[derive(serde::Deserialize)]
struct FloorChoice {
    #[serde(default)]
    delta: FloorDelta,
}

#[derive(serde::Deserialize, Default)]
struct FloorDelta {
    #[serde(default)]
    content: Option<String>,
}

/// The minimal real client: POST `body` to `url` with reqwest, parse the SSE with
/// eventsource-stream, deserialize each chunk with serde into typed structs. Returns (text
/// deltas, when the request was started, when the first delta was parsed).
pub async fn real_floor(
    client: reqwest::Client,
    url: String,
    body: Vec<u8>,
) -> (usize, Instant, Option<Instant>) {
    use eventsource_stream::Eventsource;
    let start = Instant::now();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("floor request");
    let mut events = response.bytes_stream().eventsource();
    let mut texts = 0usize;
    let mut first = None;
    while let Some(event) = events.next().await {
        let event = event.expect("floor SSE");
        if event.data == "[DONE]" {
            break;
        }
        let chunk: FloorChunk = serde_json::from_str(&event.data).expect("floor chunk");
        for choice in chunk.choices {
            if choice.delta.content.is_some_and(|c| !c.is_empty()) {
                texts += 1;
                first.get_or_insert_with(Instant::now);
            }
        }
    }
    (texts, start, first)
}

/// A backend's `HttpClient` (through the core's trait) + `SseDecoder`, counting content
/// events: what the agent path costs without the agent and the chunk parser.
fn client_floor(setup: &Setup, exec: &Exec) -> usize {
    use agent_core::http::{HttpRequest, Method};
    let request = HttpRequest::new(Method::Post, format!("{}/chat/completions", setup.base_url))
        .header("content-type", "application/json")
        .body(chat_body());
    let client = exec.http_client_cached();
    exec.block_on(async move {
        let response = client.send(request).await.expect("client floor request");
        let mut body = response.body;
        let mut decoder = SseDecoder::new();
        let mut texts = 0usize;
        let mut handle = |decoder: &mut SseDecoder| {
            while let Some(item) = decoder.next_item() {
                if let Ok(SseItem::Event(event)) = item
                    && event.data.contains("\"content\"")
                {
                    texts += 1;
                }
            }
        };
        while let Some(chunk) = body.next().await {
            decoder.push(&chunk.expect("client floor body"));
            handle(&mut decoder);
        }
        decoder.finish();
        handle(&mut decoder);
        texts
    })
}

fn async_openai(setup: &Setup) -> usize {
    use async_openai::types::chat::{
        ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
    };
    let client = setup.openai.clone();
    setup.floor_rt.block_on(async move {
        let request = CreateChatCompletionRequestArgs::default()
            .model(MODEL)
            .messages([ChatCompletionRequestUserMessageArgs::default()
                .content("go")
                .build()
                .expect("message")
                .into()])
            .build()
            .expect("request");
        let mut stream = client
            .chat()
            .create_stream(request)
            .await
            .expect("async-openai stream");
        let mut texts = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("async-openai chunk");
            for choice in chunk.choices {
                if choice.delta.content.is_some_and(|c| !c.is_empty()) {
                    texts += 1;
                }
            }
        }
        texts
    })
}

fn backend(exec: &Exec, agent: &agent_core::agent::Agent) -> usize {
    exec.fold(agent, "go", 0usize, |texts, event| {
        match &event.kind {
            EventKind::TextDelta { .. } => *texts += 1,
            EventKind::RunFailed { error, .. } => panic!("run failed: {}", error.message),
            _ => {}
        }
        true
    })
}

fn once(setup: &Setup, contender: Contender) -> usize {
    match contender {
        Contender::FloorReal => {
            let url = format!("{}/chat/completions", setup.base_url);
            let client = setup.reqwest.clone();
            setup
                .floor_rt
                .block_on(real_floor(client, url, chat_body()))
                .0
        }
        Contender::FloorSse => floor(setup, false),
        Contender::FloorParse => floor(setup, true),
        Contender::AsyncOpenAi => async_openai(setup),
        Contender::ClientFloor(flavor) => {
            let (exec, _) = setup
                .backends
                .iter()
                .find(|(e, _)| e.flavor() == flavor)
                .expect("backend set up");
            client_floor(setup, exec)
        }
        Contender::Backend(flavor) => {
            let (exec, agent) = setup
                .backends
                .iter()
                .find(|(e, _)| e.flavor() == flavor)
                .expect("backend set up");
            backend(exec, agent)
        }
        Contender::TokioClient(flavor) => {
            let (i, agent) = setup
                .tokio_client
                .iter()
                .find(|(i, _)| setup.backends[*i].0.flavor() == flavor)
                .expect("TokioClient agent set up");
            backend(&setup.backends[*i].0, agent)
        }
    }
}

/// Start the upstream and build every contender.
fn setup(config: &Config) -> (Upstream, Setup, usize) {
    let script = Script::burst(config.http_chunks);
    let response_bytes = script.response_bytes();
    let upstream = Upstream::start(script).expect("upstream");
    let base_url = upstream.base_url();
    let floor_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("floor runtime");
    let reqwest = floor_rt.block_on(async { reqwest::Client::new() });
    let openai = floor_rt.block_on(async {
        async_openai::Client::with_config(
            async_openai::config::OpenAIConfig::new()
                .with_api_base(base_url.clone())
                .with_api_key("bench"),
        )
    });
    let backends = Flavor::ALL
        .iter()
        .map(|&flavor| {
            let exec = Exec::new(flavor);
            let config = OpenAiConfig::new(base_url.clone(), MODEL).with_retry(RetryPolicy::none());
            let model = OpenAiModel::new(config, exec.http_client_cached());
            let agent = exec
                .agent_builder()
                .shared_model(Arc::new(model))
                .build()
                .expect("http agent");
            (exec, agent)
        })
        .collect::<Vec<(Exec, agent_core::agent::Agent)>>();
    let tokio_client = backends
        .iter()
        .enumerate()
        .filter_map(|(i, (exec, _))| {
            let handle = exec.tokio_handle()?;
            let config = OpenAiConfig::new(base_url.clone(), MODEL).with_retry(RetryPolicy::none());
            let client = Arc::new(backend_tokio::TokioClient::with_handle(handle));
            let model = OpenAiModel::new(config, client);
            let agent = exec
                .agent_builder()
                .shared_model(Arc::new(model))
                .build()
                .expect("TokioClient agent");
            Some((i, agent))
        })
        .collect();
    let setup = Setup {
        base_url,
        floor_rt,
        reqwest,
        openai,
        backends,
        tokio_client,
    };
    (upstream, setup, response_bytes)
}

/// Measure.
pub fn run(config: &Config) -> HttpResult {
    let (upstream, setup, response_bytes) = setup(config);
    let mut contenders = vec![
        Contender::FloorReal,
        Contender::FloorSse,
        Contender::FloorParse,
        Contender::AsyncOpenAi,
        Contender::ClientFloor(Flavor::TokioCurrent),
        Contender::ClientFloor(Flavor::SmolSingle),
        Contender::ClientFloor(Flavor::Blocking),
    ];
    contenders.extend(Flavor::ALL.iter().map(|&f| Contender::Backend(f)));
    contenders.extend(
        [
            Flavor::TokioCurrent,
            Flavor::TokioMulti,
            Flavor::TokioMultiBlockOn,
        ]
        .map(Contender::TokioClient),
    );

    let expected = config.http_chunks;
    for &contender in &contenders {
        let texts = once(&setup, contender);
        assert_eq!(
            texts,
            expected,
            "{}: wrong number of deltas",
            contender.label()
        );
    }
    let mut samples: Vec<Samples> = contenders.iter().map(|_| Samples::new()).collect();
    for rep in 0..config.http_reps {
        for k in 0..contenders.len() {
            let slot = (k + rep) % contenders.len();
            let start = Instant::now();
            let texts = once(&setup, contenders[slot]);
            let elapsed = start.elapsed().as_secs_f64();
            assert_eq!(texts, expected, "{}", contenders[slot].label());
            samples[slot].push(texts as f64 / elapsed);
        }
    }
    drop(upstream);
    HttpResult {
        chunks: config.http_chunks,
        response_bytes,
        reps: config.http_reps,
        rows: contenders
            .into_iter()
            .zip(samples.iter_mut())
            .map(|(c, s)| (c, s.summary()))
            .collect(),
    }
}

/// One contender, for `bench __profile`.
pub struct Profile {
    _upstream: Upstream,
    setup: Setup,
    contender: Contender,
}

impl Profile {
    /// `floor`, `parse`, `openai` or a flavor name.
    pub fn new(config: &Config, name: &str) -> Profile {
        let contender = match name {
            "floor" => Contender::FloorReal,
            "floor-sse" => Contender::FloorSse,
            "parse" => Contender::FloorParse,
            "openai" => Contender::AsyncOpenAi,
            "tokio-ct" => Contender::Backend(Flavor::TokioCurrent),
            "tokio-mt" => Contender::Backend(Flavor::TokioMulti),
            "tokio-bo" => Contender::Backend(Flavor::TokioMultiBlockOn),
            "tokio-client-ct" => Contender::TokioClient(Flavor::TokioCurrent),
            "tokio-client-mt" => Contender::TokioClient(Flavor::TokioMulti),
            "tokio-client-bo" => Contender::TokioClient(Flavor::TokioMultiBlockOn),
            "smol" => Contender::Backend(Flavor::SmolSingle),
            _ => Contender::Backend(Flavor::Blocking),
        };
        let (upstream, setup, _) = setup(config);
        Profile {
            _upstream: upstream,
            setup,
            contender,
        }
    }

    /// One request.
    pub fn once(&mut self) {
        once(&self.setup, self.contender);
    }
}
