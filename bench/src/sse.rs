//! (6) The SSE decoder: throughput on a large stream of OpenAI chunks, linearity on one long
//! line fed whole or in small chunks, and eventsource-stream on the same input.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use agent_core::sse::{SseDecoder, SseItem, SseLimits};
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;

use crate::config::Config;
use crate::stats::{Samples, Summary};
use crate::upstream::content_event;

/// The chunk size of the throughput input (a typical socket read).
pub const READ_CHUNK: usize = 16 * 1024;
/// The chunk size of the linearity input (the line is cut into line / this many chunks).
pub const SMALL_CHUNK: usize = 1024;
/// A linearity step of the peer taking longer than this ends its ladder.
const PEER_STEP_LIMIT: Duration = Duration::from_secs(3);

/// One decoder on one input.
pub struct Throughput {
    /// Events decoded per pass.
    pub events: usize,
    /// MB/s (10^6 bytes per second).
    pub mb_per_s: Summary,
}

/// One rung of a linearity ladder.
pub struct LinearityStep {
    /// Length of the line in bytes.
    pub line_bytes: usize,
    /// Number of chunks of the "many" feed.
    pub chunks: usize,
    /// Median seconds, fed in one chunk.
    pub one_chunk_s: f64,
    /// Median seconds, fed in `chunks` chunks.
    pub many_chunks_s: f64,
}

impl LinearityStep {
    /// Many-chunk time over one-chunk time.
    pub fn ratio(&self) -> f64 {
        self.many_chunks_s / self.one_chunk_s
    }
}

/// The result of the SSE measurement.
pub struct SseResult {
    /// Size of the throughput input.
    pub stream_bytes: usize,
    /// Average event size on the wire.
    pub event_bytes: usize,
    /// Repetitions.
    pub reps: usize,
    /// agent-core's `SseDecoder`.
    pub core: Throughput,
    /// eventsource-stream.
    pub peer: Throughput,
    /// The core's linearity ladder (the last step is the full line).
    pub core_linearity: Vec<LinearityStep>,
    /// The peer's ladder (stopped early when a step gets too slow).
    pub peer_linearity: Vec<LinearityStep>,
    /// The line size the peer's ladder would have reached.
    pub line_bytes: usize,
}

fn openai_stream(size: usize) -> Bytes {
    let mut out = Vec::with_capacity(size + 1024);
    let mut i = 0;
    while out.len() < size {
        out.extend_from_slice(content_event(i).as_bytes());
        i += 1;
    }
    Bytes::from(out)
}

fn split(input: &Bytes, chunk: usize) -> Vec<Bytes> {
    (0..input.len())
        .step_by(chunk)
        .map(|start| input.slice(start..(start + chunk).min(input.len())))
        .collect()
}

/// `input` cut into exactly `n` pieces of nearly equal sizes.
fn split_into(input: &Bytes, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| input.slice(input.len() * i / n..input.len() * (i + 1) / n))
        .collect()
}

/// Decode with agent-core's decoder; returns (events, data bytes).
fn core_decode(chunks: &[Bytes], limits: SseLimits) -> (usize, usize) {
    let mut decoder = SseDecoder::with_limits(limits);
    let mut events = 0;
    let mut data = 0;
    let mut drain = |decoder: &mut SseDecoder| {
        while let Some(item) = decoder.next_item() {
            if let SseItem::Event(event) = item.expect("valid input") {
                events += 1;
                data += event.data.len();
            }
        }
    };
    for chunk in chunks {
        decoder.push(chunk);
        drain(&mut decoder);
    }
    decoder.finish();
    drain(&mut decoder);
    (events, data)
}

/// Decode with eventsource-stream; returns (events, data bytes).
fn peer_decode(chunks: &[Bytes]) -> (usize, usize) {
    let stream = futures_util::stream::iter(chunks.iter().cloned().map(Ok::<Bytes, Infallible>));
    agent_core::runtime::block_on(stream.eventsource().fold(
        (0usize, 0usize),
        |(events, data), event| {
            let event = event.expect("valid input");
            std::future::ready((events + 1, data + event.data.len()))
        },
    ))
}

fn seconds(f: impl FnOnce() -> (usize, usize)) -> (f64, (usize, usize)) {
    let start = Instant::now();
    let out = f();
    (start.elapsed().as_secs_f64(), out)
}

fn ladder(
    line_bytes: usize,
    reps: usize,
    decode: impl Fn(&[Bytes]) -> (usize, usize),
    step_limit: Option<Duration>,
) -> Vec<LinearityStep> {
    let mut steps = Vec::new();
    let mut size = (line_bytes / 8).max(SMALL_CHUNK);
    loop {
        let mut input = b"data: ".to_vec();
        input.resize(6 + size, b'x');
        input.extend_from_slice(b"\n\n");
        let input = Bytes::from(input);
        let whole = vec![input.clone()];
        // L / 1 KiB chunks (8,192 for 8 MiB), of (nearly) equal sizes.
        let pieces = split_into(&input, size / SMALL_CHUNK);
        let (mut one, mut many) = (Samples::new(), Samples::new());
        let mut too_slow = false;
        for _ in 0..reps {
            let (t, out) = seconds(|| decode(&whole));
            assert_eq!(out, (1, size));
            one.push(t);
            let (t, out) = seconds(|| decode(&pieces));
            assert_eq!(out, (1, size));
            many.push(t);
            if step_limit.is_some_and(|limit| t > limit.as_secs_f64()) {
                too_slow = true;
                break;
            }
        }
        steps.push(LinearityStep {
            line_bytes: size,
            chunks: pieces.len(),
            one_chunk_s: one.median(),
            many_chunks_s: many.median(),
        });
        // The next step would take about 4 times as long if the decoder is quadratic.
        let next_too_slow =
            step_limit.is_some_and(|limit| many.median() * 4.0 > limit.as_secs_f64() * 2.0);
        if size >= line_bytes || too_slow || next_too_slow {
            return steps;
        }
        size *= 2;
    }
}

/// A decoder on a thread of its own, running one timed pass per request.
struct Worker {
    requests: std::sync::mpsc::Sender<()>,
    results: std::sync::mpsc::Receiver<(f64, usize)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn start(chunks: Vec<Bytes>, decode: impl Fn(&[Bytes]) -> usize + Send + 'static) -> Worker {
        let (requests, requested) = std::sync::mpsc::channel::<()>();
        let (done, results) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sse-decoder".into())
            .spawn(move || {
                while requested.recv().is_ok() {
                    let start = Instant::now();
                    let count = decode(&chunks);
                    if done.send((start.elapsed().as_secs_f64(), count)).is_err() {
                        return;
                    }
                }
            })
            .expect("decoder thread");
        Worker {
            requests,
            results,
            thread: Some(thread),
        }
    }

    /// One pass: (seconds, events).
    fn pass(&self) -> (f64, usize) {
        self.requests.send(()).expect("decoder thread alive");
        self.results.recv().expect("decoder thread answers")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let (requests, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.requests, requests));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Measure.
pub fn run(config: &Config) -> SseResult {
    let input = openai_stream(config.sse_bytes);
    let chunks = split(&input, READ_CHUNK);
    let limits = SseLimits::default();
    let (events, data) = core_decode(&chunks, limits);
    assert_eq!(peer_decode(&chunks), (events, data), "both decoders agree");

    let mb = input.len() as f64 / 1e6;
    // Each decoder runs on a thread of its own, so each allocates from its own malloc arena:
    // eventsource-stream's allocation pattern (a buffer split after every line) otherwise
    // leaves the shared heap in a state that slows the other decoder's allocations down.
    let core_worker = Worker::start(chunks.clone(), move |chunks| core_decode(chunks, limits).0);
    let peer_worker = Worker::start(chunks.clone(), |chunks| peer_decode(chunks).0);
    let (mut core, mut peer) = (Samples::new(), Samples::new());
    for rep in 0..config.sse_reps {
        let order = if rep % 2 == 0 {
            [(&core_worker, &mut core), (&peer_worker, &mut peer)]
        } else {
            [(&peer_worker, &mut peer), (&core_worker, &mut core)]
        };
        for (worker, samples) in order {
            let (t, count) = worker.pass();
            assert_eq!(count, events);
            samples.push(mb / t);
        }
    }
    drop((core_worker, peer_worker));

    let line = config.sse_line_bytes;
    let big = SseLimits {
        max_line_bytes: line * 2,
        max_event_bytes: line * 2,
    };
    let reps = config.sse_reps.max(3);
    let core_linearity = ladder(line, reps, |c| core_decode(c, big), None);
    let peer_linearity = ladder(line, reps, peer_decode, Some(PEER_STEP_LIMIT));
    SseResult {
        stream_bytes: input.len(),
        event_bytes: input.len() / events.max(1),
        reps: config.sse_reps,
        core: Throughput {
            events,
            mb_per_s: core.summary(),
        },
        peer: Throughput {
            events,
            mb_per_s: peer.summary(),
        },
        core_linearity,
        peer_linearity,
        line_bytes: line,
    }
}

/// One decoder on the throughput input, for `bench __profile`.
pub struct Profile {
    chunks: Vec<Bytes>,
    peer: bool,
}

impl Profile {
    /// agent-core's decoder, or the peer's.
    pub fn new(config: &Config, peer: bool) -> Profile {
        let input = openai_stream(config.sse_bytes / 4);
        Profile {
            chunks: split(&input, READ_CHUNK),
            peer,
        }
    }

    /// One pass.
    pub fn once(&mut self) {
        let start = Instant::now();
        if self.peer {
            peer_decode(&self.chunks);
        } else {
            core_decode(&self.chunks, SseLimits::default());
        }
        let bytes: usize = self.chunks.iter().map(Bytes::len).sum();
        eprintln!(
            "{:.0} MB/s",
            bytes as f64 / 1e6 / start.elapsed().as_secs_f64()
        );
    }
}
