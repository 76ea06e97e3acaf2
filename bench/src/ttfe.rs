//! (3) Time to first event: an upstream paced at a few ms per chunk; the latency from starting
//! a run to its first `text_delta`, against a raw client's latency to the first body byte.
//!
//! The upstream records, for each exchange, when it had read the request and when it wrote
//! the first chunk. Its pacing (and the jitter of its sleeping thread) lies between those two
//! moments, so it is left out: a contender's **overhead** is (request read − start) + (first
//! event − first chunk written), minus the same sum for the raw client (median). Two probes
//! split the overhead further: one around the backend's `HttpClient` stamps the moment it
//! hands over its first body chunk, one around the `OpenAiModel` stamps its first text delta.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use agent_core::event::EventKind;
use agent_core::http::{BodyStream, HttpClient, HttpError, HttpRequest, HttpResponse};
use agent_core::model::{
    Model, ModelContext, ModelDelta, ModelRequest, ModelStream, OpenAiConfig, OpenAiModel,
};
use agent_core::policy::RetryPolicy;
use agent_core::runtime::BoxFuture;
use bytes::Bytes;
use futures_util::Stream;

use crate::config::Config;
use crate::exec::{Exec, Flavor};
use crate::stats::{Samples, Summary};
use crate::upstream::{MODEL, Script, Stamps, Upstream, raw_first_body_byte};

/// A moment stamped once per trial.
#[derive(Debug, Default)]
struct Stamp(Mutex<Option<Instant>>);

impl Stamp {
    fn set(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn take(&self) -> Option<Instant> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Wraps a client: stamps the first non-empty body chunk it hands over.
#[derive(Debug)]
struct ClientProbe {
    inner: Arc<dyn HttpClient>,
    stamp: Arc<Stamp>,
}

impl HttpClient for ClientProbe {
    fn send(&self, request: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        let send = self.inner.send(request);
        let stamp = self.stamp.clone();
        Box::pin(async move {
            let mut response = send.await?;
            let body =
                std::mem::replace(&mut response.body, Box::pin(futures_util::stream::empty()));
            response.body = Box::pin(StampFirstChunk {
                body,
                stamp: Some(stamp),
            });
            Ok(response)
        })
    }
}

struct StampFirstChunk {
    body: BodyStream,
    stamp: Option<Arc<Stamp>>,
}

impl Stream for StampFirstChunk {
    type Item = Result<Bytes, HttpError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.body.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled
            && !chunk.is_empty()
            && let Some(stamp) = self.stamp.take()
        {
            stamp.set();
        }
        polled
    }
}

/// Wraps a model: stamps the moment its stream yields its first text delta.
#[derive(Debug)]
struct ModelProbe {
    inner: Arc<dyn Model>,
    stamp: Arc<Stamp>,
}

impl Model for ModelProbe {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn stream(&self, request: ModelRequest, cx: ModelContext) -> ModelStream {
        let mut stream = self.inner.stream(request, cx);
        let mut stamp = Some(self.stamp.clone());
        Box::pin(futures_util::stream::poll_fn(move |cx| {
            let polled = stream.as_mut().poll_next(cx);
            if let Poll::Ready(Some(Ok(ModelDelta::Text(_)))) = &polled
                && let Some(stamp) = stamp.take()
            {
                stamp.set();
            }
            polled
        }))
    }
}

/// A reference client with no backend and no core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// std `TcpStream`, hand-written request: the baseline.
    Socket,
    /// reqwest on a tokio current-thread runtime, `send().await` then `chunk().await`.
    Reqwest,
    /// ureq on the calling thread, `send` then the first `read` of the body.
    Ureq,
}

impl Reference {
    /// All of them; the first is the baseline.
    pub const ALL: [Reference; 3] = [Reference::Socket, Reference::Reqwest, Reference::Ureq];

    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Reference::Socket => "raw client: std `TcpStream` (baseline)",
            Reference::Reqwest => "reqwest used directly, no core (first body chunk)",
            Reference::Ureq => "ureq used directly, no core (first body read)",
        }
    }
}

const CHAT_BODY: &str =
    r#"{"model":"bench-model","stream":true,"messages":[{"role":"user","content":"go"}]}"#;

struct References {
    addr: std::net::SocketAddr,
    url: String,
    rt: tokio::runtime::Runtime,
    reqwest: backend_tokio::reqwest::Client,
    ureq: ureq::Agent,
}

impl References {
    fn new(upstream: &Upstream) -> References {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let reqwest = rt.block_on(async { backend_tokio::reqwest::Client::new() });
        References {
            addr: upstream.addr(),
            url: format!("{}/chat/completions", upstream.base_url()),
            rt,
            reqwest,
            ureq: ureq::Agent::new_with_defaults(),
        }
    }

    /// The moment the first body byte was read.
    fn first_byte(&self, which: Reference) -> Instant {
        match which {
            Reference::Socket => raw_first_body_byte(self.addr).expect("raw client"),
            Reference::Reqwest => self.rt.block_on(async {
                let mut response = self
                    .reqwest
                    .post(&self.url)
                    .header("content-type", "application/json")
                    .body(CHAT_BODY)
                    .send()
                    .await
                    .expect("reqwest");
                response
                    .chunk()
                    .await
                    .expect("reqwest body")
                    .expect("a chunk");
                Instant::now()
            }),
            Reference::Ureq => {
                use std::io::Read;
                let mut response = self
                    .ureq
                    .post(&self.url)
                    .header("content-type", "application/json")
                    .send(CHAT_BODY)
                    .expect("ureq");
                let mut buf = [0u8; 4096];
                let n = response
                    .body_mut()
                    .as_reader()
                    .read(&mut buf)
                    .expect("ureq body");
                assert!(n > 0, "ureq read a body byte");
                Instant::now()
            }
        }
    }
}

struct Backend {
    exec: Exec,
    agent: agent_core::agent::Agent,
    chunk: Arc<Stamp>,
    delta: Arc<Stamp>,
}

fn backend(upstream: &Upstream, flavor: Flavor) -> Backend {
    let exec = Exec::new(flavor);
    let config = OpenAiConfig::new(upstream.base_url(), MODEL).with_retry(RetryPolicy::none());
    let (chunk, delta) = (Arc::new(Stamp::default()), Arc::new(Stamp::default()));
    let client = ClientProbe {
        inner: exec.http_client_cached(),
        stamp: chunk.clone(),
    };
    let model = ModelProbe {
        inner: Arc::new(OpenAiModel::new(config, Arc::new(client))),
        stamp: delta.clone(),
    };
    let agent = exec
        .agent_builder()
        .model(model)
        .build()
        .expect("ttfe agent");
    Backend {
        exec,
        agent,
        chunk,
        delta,
    }
}

/// The moments of one trial.
struct Moments {
    start: Instant,
    /// Upstream: request read.
    request: Instant,
    /// Upstream: first chunk written.
    written: Instant,
    /// The client's first body chunk (the read, for a reference).
    chunk: Instant,
    /// The model's first text delta (backends only).
    delta: Instant,
    /// The first `text_delta` event (backends only).
    event: Instant,
}

impl Moments {
    fn us(a: Instant, b: Instant) -> f64 {
        if b >= a {
            (b - a).as_secs_f64() * 1e6
        } else {
            -((a - b).as_secs_f64() * 1e6)
        }
    }

    /// Start → request read at the upstream.
    fn request_part(&self) -> f64 {
        Self::us(self.start, self.request)
    }

    /// First chunk written → first chunk handed over by the client.
    fn delivery(&self) -> f64 {
        Self::us(self.written, self.chunk)
    }

    /// Everything but the upstream's own pacing.
    fn total(&self) -> f64 {
        self.request_part() + Self::us(self.written, self.event)
    }
}

fn upstream_moments(stamps: &Stamps) -> (Instant, Instant) {
    let (request, written) = stamps.get();
    (
        request.expect("the upstream read the request"),
        written.expect("the upstream wrote a chunk"),
    )
}

fn reference_trial(references: &References, which: Reference, stamps: &Stamps) -> Moments {
    stamps.clear();
    let start = Instant::now();
    let read = references.first_byte(which);
    let (request, written) = upstream_moments(stamps);
    Moments {
        start,
        request,
        written,
        chunk: read,
        delta: read,
        event: read,
    }
}

fn backend_trial(b: &Backend, stamps: &Stamps) -> Moments {
    stamps.clear();
    b.chunk.take();
    b.delta.take();
    let start = Instant::now();
    let event = b.exec.fold(&b.agent, "go", None, move |at, event| {
        match &event.kind {
            EventKind::TextDelta { .. } => {
                *at = Some(Instant::now());
                return false;
            }
            EventKind::RunFailed { error, .. } => panic!("run failed: {}", error.message),
            _ => {}
        }
        true
    });
    let (request, written) = upstream_moments(stamps);
    Moments {
        start,
        request,
        written,
        chunk: b.chunk.take().expect("a first chunk"),
        delta: b.delta.take().expect("a first model delta"),
        event: event.expect("a text delta"),
    }
}

/// One contender's overhead and its parts, µs.
pub struct Row {
    /// Total overhead over the raw client's median.
    pub overhead: Summary,
    /// Request part over the raw client's median request part.
    pub request: Summary,
    /// Delivery of the first chunk over the raw client's median delivery.
    pub delivery: Summary,
    /// First chunk → the model's first delta (backends).
    pub model: Summary,
    /// The model's first delta → the first event (backends).
    pub agent: Summary,
}

/// The result of the TTFE measurement.
pub struct TtfeResult {
    /// Trials per contender.
    pub trials: usize,
    /// Upstream pace, ms.
    pub pace_ms: u64,
    /// The raw client's request part and delivery, µs (the baseline).
    pub baseline_request: Summary,
    /// The raw client's delivery of the first chunk, µs.
    pub baseline_delivery: Summary,
    /// The raw client's whole latency (start → first byte, pacing included), µs.
    pub baseline_latency: Summary,
    /// reqwest and ureq used directly.
    pub references: Vec<(Reference, Row)>,
    /// The backends.
    pub rows: Vec<(Flavor, Row)>,
}

/// One backend's trials in a loop, for `bench __profile`.
pub struct Profile {
    _upstream: Upstream,
    stamps: Arc<Stamps>,
    backend: Backend,
}

impl Profile {
    /// The TTFE setup for `flavor`.
    pub fn new(config: &Config, flavor: Flavor) -> Profile {
        let stamps = Arc::new(Stamps::default());
        let pace = Duration::from_millis(config.ttfe_pace_ms);
        let upstream = Upstream::start(Script::paced(3, pace, stamps.clone())).expect("upstream");
        let backend = backend(&upstream, flavor);
        Profile {
            _upstream: upstream,
            stamps,
            backend,
        }
    }

    /// One trial.
    pub fn once(&mut self) {
        let m = backend_trial(&self.backend, &self.stamps);
        eprintln!(
            "request {:.0} µs, delivery {:.0} µs, model {:.0} µs, agent {:.0} µs",
            m.request_part(),
            m.delivery(),
            Moments::us(m.chunk, m.delta),
            Moments::us(m.delta, m.event)
        );
    }
}

/// Measure.
pub fn run(config: &Config) -> TtfeResult {
    let stamps = Arc::new(Stamps::default());
    let pace = Duration::from_millis(config.ttfe_pace_ms);
    // A few chunks are enough: each run is dropped after its first delta.
    let upstream = Upstream::start(Script::paced(3, pace, stamps.clone())).expect("upstream");
    let references = References::new(&upstream);
    let backends: Vec<Backend> = Flavor::ALL
        .iter()
        .map(|&flavor| backend(&upstream, flavor))
        .collect();

    // Warm-up.
    for which in Reference::ALL {
        reference_trial(&references, which, &stamps);
    }
    for b in &backends {
        backend_trial(b, &stamps);
    }

    let refs = Reference::ALL.len();
    let slots = refs + backends.len();
    let mut moments: Vec<Vec<Moments>> = (0..slots).map(|_| Vec::new()).collect();
    for k in 0..config.ttfe_trials {
        for j in 0..slots {
            let slot = (j + k) % slots;
            let m = if slot < refs {
                reference_trial(&references, Reference::ALL[slot], &stamps)
            } else {
                backend_trial(&backends[slot - refs], &stamps)
            };
            moments[slot].push(m);
        }
    }
    drop(backends);
    drop(upstream);

    let summary = |values: Vec<f64>| Samples::from_vec(values).summary();
    let base = &moments[0];
    let base_request = summary(base.iter().map(Moments::request_part).collect());
    let base_delivery = summary(base.iter().map(Moments::delivery).collect());
    let base_total = summary(base.iter().map(Moments::total).collect()).median;
    let row = |ms: &[Moments]| Row {
        overhead: summary(ms.iter().map(|m| m.total() - base_total).collect()),
        request: summary(
            ms.iter()
                .map(|m| m.request_part() - base_request.median)
                .collect(),
        ),
        delivery: summary(
            ms.iter()
                .map(|m| m.delivery() - base_delivery.median)
                .collect(),
        ),
        model: summary(ms.iter().map(|m| Moments::us(m.chunk, m.delta)).collect()),
        agent: summary(ms.iter().map(|m| Moments::us(m.delta, m.event)).collect()),
    };
    TtfeResult {
        trials: config.ttfe_trials,
        pace_ms: config.ttfe_pace_ms,
        baseline_request: base_request,
        baseline_delivery: base_delivery,
        baseline_latency: summary(base.iter().map(|m| Moments::us(m.start, m.event)).collect()),
        references: Reference::ALL
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, &which)| (which, row(&moments[i])))
            .collect(),
        rows: Flavor::ALL
            .iter()
            .enumerate()
            .map(|(i, &flavor)| (flavor, row(&moments[refs + i])))
            .collect(),
    }
}
