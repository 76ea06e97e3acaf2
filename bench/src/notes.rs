//! The analysis part of the report: what the profiles of the missed targets showed, what was
//! fixed and what remains. Written by hand from the profiles (`bench __profile …` under `perf`
//! and `valgrind --tool=callgrind`, see the README); the numbers it quotes are from those
//! profiles, the tables above are from the run that wrote this page.

/// Appended to the generated page.
pub const NOTES: &str = r#"## What the numbers say

How to reproduce a profile: `CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release
-p bench --target-dir target/prof`, then for example `perf record -F 4000
target/prof/release/bench __profile pipeline-smol 5` or `valgrind --tool=callgrind
--toggle-collect='*Exec::fold*' target/prof/release/bench __profile pipeline-smol 20`
(`bench __profile` with no argument lists the contenders). This machine is a 2-CPU virtual
machine shared with other work: expect a spread of ±20 % between runs, more in the tails.

### 1. Pipeline overhead — missed (target ≤ 2×; about 3–4.5× the floor, from run to run)

The floor does almost nothing per delta: it clones the string out of the script (as the
scripted model does), hands it over and frees it, 40–65 ns. The agent does that too and then
turns every delta into an event. callgrind on `pipeline-smol` (200,000 deltas): about 1,280
instructions per delta in all, of which about 450 are the floor's own work (clone, allocation,
free) and the rest the agent's:

| where | instructions per delta |
|---|---|
| the `drive` loop itself (the `async fn` state machine, `match`, bookkeeping) | ~170 |
| `Emitter::emit` + `Emitter::take`: the one-slot `Arc<Mutex<Option<EventKind>>>` hand-off, polled twice per event | ~150 |
| `ScriptStream::poll_next` (pops 80-byte `Step`s, builds 80-byte `ModelDelta`s) | ~95 |
| `RunStream::poll_next`: `catch_unwind` (~19) and `AtomicWaker::register` on every poll (~24) | ~90 |
| copying every delta into three strings (`round_text` and `text` in `drive`, `partial_text` in `RunStream`), with their reallocations | ~80 |
| `RunStream::event` (sequence number, `partial_text`) | ~44 |
| `stream.next().instrument(span.clone())`: a `tracing` span cloned, entered and dropped per delta | ~25 |

Every value on the way is large: `Event` is 112 bytes, `EventKind` 104, `ModelDelta` and
`Step` 80 (they carry the rare tool-call variants inline), and each is moved several times per
delta. The blocking backend pays more (see its row): `RunIter::next` calls the core's
`block_on` once per event, which allocates a new waker (`Arc` + `thread::current()`) every
time, so `RunStream` re-registers a different waker with its `AtomicWaker` on every event
(clone + drop): about a fifth of its profile.

The profile above was taken before four of the fixes it suggested were made in agent-core
(the tables on this page are measured after them):

* done: `RunStream` registers the cancel waker (and polls the run deadline) only when it is
  about to return `Pending`, re-checking the flag after registering;
* done: `drive` no longer fills `round_text`; a round's text is sliced out of the run's text;
* done: the model stream is instrumented once per round (a small wrapper enters the span per
  poll) instead of cloning a span per `next()`;
* done: the core's `block_on` reuses its thread's waker, so `RunIter::next` no longer
  allocates one per event.

callgrind again at the commit of this page (`bench __profile pipeline-smol 1`, 200,000 deltas):
the `drive` loop about 160 instructions per delta, `Emitter::emit` 130 and `Emitter::take` 42
(the hand-off is still the largest single cost after the loop itself), `ScriptStream::poll_next`
about 100, `RunStream::poll_next` 96 and `RunStream::event` 59, next to the 66 of the
`String::clone` that the floor pays too, plus its allocation and free.

Still open: shrink the values that travel per delta (box the rare large variants:
`ToolCallDelta` in `ModelDelta`, `RunCompleted`/`ModelRequestCompleted`/tool-call payloads in
`EventKind`), and a cheaper hand-off than the `Arc<Mutex<Option<EventKind>>>` slot.

Together these remove perhaps half of the agent's own instructions, which would bring the
pipeline to about 2× the floor (the target since issue 17; not attempted in that work, which
went to the server path). The rest is inherent to the design the core chose on purpose: a
pull-based run that constructs a numbered event per delta and hands it over one at a time with
backpressure and a cooperative budget. 1.5× a bare `stream::iter` of the same strings is not
reachable without giving some of that up.

### 2. HTTP end to end — the agent at or above the floor on each backend's own client

The **floor** is now what a minimal real client does (reqwest + eventsource-stream + typed
serde per chunk); the decoder-only floor of earlier pages (reqwest + the core's decoder,
counting events without parsing them) is kept as a row. The upstream writes one frame per
`write`, as servers do (it used to write the whole response at once, which let every client
read many frames per system call). The agent rows on their backend's own client run at or
above the floor on every backend; async-openai runs at about the floor (both spend most of
their time in reqwest's connection task and in serde_json).

The two multi-thread rows are the two shapes a tokio user writes. With `ReqwestClient`, a run
polled from `block_on`'s thread (what `#[tokio::main]` code does: `main`'s future is not a
worker task) runs at about a tenth of the spawned shape: reqwest reads the body on a
connection task that lives on a worker and hands it over through a channel one HTTP chunk per
wake-up, so every token crosses threads twice (unpark `block_on`'s thread, wake the
connection task for the next chunk). reqwest used alone behaves the same; it is the shape,
not the agent. `TokioClient` (new in backend-tokio: agent-hyper's hyper client over tokio's
sockets, the code backend-smol's client already runs) has no connection task: whoever polls
the body drives the connection and decodes everything one socket read brought, on its own
thread. With it the `block_on` shape runs as fast as the spawned one (and faster than reqwest
in either), so `backend_tokio::openai_model` now speaks through `TokioClient`, and the target
"the fast shape is the natural one" is met through the API: the natural code
(`#[tokio::main]`, `openai_model`, `run.next().await`) is the fast shape. `ReqwestClient` stays
for reqwest's features (its own `ClientBuilder`, its proxies and TLS options); its `block_on`
row is the price of that shape, and its docs say so. The targets table therefore measures
each backend on its default client (`TokioClient` on tokio), and the `block_on` shape against
the spawned one on that same client; the `ReqwestClient` rows are a reference, with one
target kept for its `block_on` shape. Ratios between rows of this table move by
±20 % from run to run on this machine; the alternation keeps the ratios within one run
comparable.

What could still be cut on the client side: `parse_chunk` could deserialize borrowed strings
and keep only the first choice (a prototype with `Cow<str>` fields took 25 % off);
`OpenAiStream` reads the clock once per SSE event for its inactivity timeout.

### 2b. The server in the path — about 1.5 µs per event on every backend (verdicts: the targets table)

Before this work, `agent serve` spent 8.6 µs (tokio), 4.3 µs (smol) and 5.7 µs (threads) of
CPU per relayed event and ran at 0.26×, 0.44× and 0.32× of the direct floor (this table, same
machine, measured at commit 92188b3 before the server changes). Four changes brought it to
1.4–1.6 µs per event and over 0.8× on every backend in quiet runs of this section alone
(`--only 9`, three runs each). CPU time per event grows with cache and scheduler contention:
within the full bench, and more so on a loaded machine (the load average is in the machine
table), the same code reads up to about 2 µs, and the p90 column shows the spread; the
targets table gives this run's verdict.

* **Coalescing** (agent-core `ResponseBody`): a body chunk takes every event that is ready when
  it is polled, stopping at the first `Pending`, the terminal event or 16 KiB, and never waits
  for more; the frames are encoded into one reused buffer. A burst costs one write instead of
  one per event; a paced stream is still sent one event per chunk, the moment each exists (the
  lockstep and free-running conformance cases and test-support's `detects_buffering` pass
  unchanged). Effect alone: 4.3 → 1.7 µs (smol), 5.7 → 1.3 µs (threads), 8.6 → 4.5 µs (tokio
  on reqwest).
* **Templates** for text and reasoning deltas in the `/v1/runs` and chat-completions encoders:
  a precomputed prefix and suffix around the delta's text, escaped exactly as serde_json escapes
  (unit tests compare both byte for byte), instead of a `serde_json::Value` tree per delta
  (17–24 % of the server's time before).
* **`TokioClient` upstream on tokio.** Coalescing gains little on reqwest (its connection task
  hands over one HTTP chunk per wake-up, so the next event is never ready when the server
  polls). `agent serve` on tokio now uses `TokioClient`: 4.5–5.9 → 1.6–2.0 µs per event.
  The `ReqwestClient` row stays in the table as the reference: `perf` on that server (flat
  profile, the server's worker threads): the run log's waker bookkeeping
  (`Waiters::wake_all_except` 6 %, `RunLog::advance` 5 %, `RunEvents::poll_next` 3 %: a lock
  and a wake per event, contended because reqwest's connection task wakes the run from the
  other worker), serde_json in `parse_chunk` 12 %, SSE decoding 4 %, the agent's one-slot
  hand-off (`Emitter`) 5 %, tokio's scheduler and wakers about 10 %, `writev` and the TCP
  stack about 8 %. Those are per-event costs that only batching at the upstream client removes.
* **Wakes the run log takes itself** (agent-core `server/runs.rs`). `perf` on the tokio server
  with `TokioClient` (2.0–2.3 µs per event in full runs) showed about a third of its CPU in
  `eventfd` writes: hyper's body channel wakes the receiver once per upstream chunk, and the
  receiver is the reader's own task, polling at that moment; tokio then reschedules the task
  after its poll and wakes the other worker to steal it (an `eventfd` write each time). Now a
  wake of the run during a reader's own poll is recorded in one atomic word and taken by that
  poll (the run is polled once more at once; a second wake still goes to the executor, so a
  cooperative yield still yields), and waking everyone but the sole reader takes no lock.
  Unit tests in `runs.rs` cover the race between a wake and the end of a poll. Effect:
  tokio 2.05 → 1.5–1.6 µs, smol 1.65 → 1.55, threads 1.5 → 1.35–1.4.

**Time to the first delta** is unchanged by the coalescing (it never waits): with the paced
upstream, a first chunk reaches the client through any server about 100–130 µs after it
would have reached it directly (one more HTTP hop on loopback and the agent). The burst
column is not a latency measurement: there, the first chunk is buffered behind a socket full
of others. The threaded server's **request → upstream** column showed 8–9 ms before this work:
its thread that waits for request heads slept up to 10 ms between passes. It now sleeps in
`poll(2)` on its sockets (rustix's safe wrapper) and a wake socket written on every arrival, so
a head is read the moment it arrives.

### 3. Time to first event — missed (the HTTP clients' connection set-up)

The split columns show where the overhead goes. The core's part — the first chunk through SSE
decoding and chunk parsing (**model**) and through the agent loop to the consumer (**agent**) —
is 10–20 µs in all, well under 100 µs. The rest is the request part: connecting and
sending the request takes an async client on this VM 100–200 µs longer than a blocking
`connect` + `write` (a non-blocking connect, an extra trip through the event loop and, for
hyper, a connection task: each sleep/wake costs tens of µs in this VM). reqwest used directly
shows the same cost, so `ReqwestClient` itself adds little. `UreqClient` adds the most: it
starts a new OS thread for every request and hands the head and each chunk over through
channels (compare with ureq used directly). A pool of idle exchange threads in
backend-blocking would remove most of that difference. `SmolClient` is the leanest backend
client. The p99 column is dominated by the VM's scheduling (2 CPUs, an upstream thread per
connection, other work on the machine).

### 4. Server fan-out (no target)

1,000 streams of 50 deltas per second each make 50,000 events per second for a server and
for the loader on the same 2 CPUs. The latencies include the loader's own queueing: it is one
thread, and the servers' timers fire in batches, so up to dozens of events arrive at once.
Server CPU per delta includes a `write` system call per event and the loopback TCP stack
behind it. tokio and smol stay under a millisecond at the median. The thread-per-connection
server runs 1,000 threads; with many of them runnable at once on 2 CPUs, the scheduler's time
slices show in its tail. Its streaming loop also creates a new `TimerSleep` (the 250 ms
disconnect check) for every frame: each registers with the core's single, process-wide timer
thread (one `Mutex<BinaryHeap>`, which also serves the model's pacing sleeps) and stays in its
heap until its deadline even though the frame arrived long before (about 12,000 stale entries
at this load). One timer per connection, re-armed only when it fires (as `OpenAiStream` does
for its inactivity timeout), and a core timer that drops cancelled entries would take that
load off. Memory per stream: the blocking server's includes a thread stack per connection.

### 5. Scale — met

10,000 concurrent runs cost about 8 KiB each on both runtimes, counting everything the process
holds for them: the task, the `RunStream` and its boxed loop, the scripted model's turn (20
texts and 20 pauses as 80-byte steps) and the timers. CPU per event is a few µs, and every delta
of this model waits on a timer of its own.

### 5b. Memory per stream with HTTP — met on every backend (verdicts: the targets table)

The table runs 10,000 concurrent paced streams through HTTP per backend, client side and
server side (servers with an in-process paced model, so the server rows hold no upstream
connection of their own). The async backends stay far below 40 KiB per stream on both sides:
a stream is a task, a hyper connection and its buffers.

The threaded client was the outlier: 317 KiB per stream at first (a quick 200-stream run),
then about 146 KiB with ureq's buffers cut to 64 + 16 KiB, and at 10,000 streams only about
6,000 runs open at once with 700 to 2,000 runs failing. The table now lists why runs fail
(under it, per backend). Two causes, found in that order:

* **The bench's upstream.** Every failure was `run_failed UpstreamReset: … Connection reset
  by peer`. `TokioServer::bind` listens with tokio's backlog of 1024; 10,000 clients connecting
  at once overflowed the accept queue (`ListenOverflows` and `ListenDrops` in
  `/proc/net/netstat` grew during the run) and clients whose handshake ACK was dropped got a
  reset. The upstream is now the same server (agent-hyper's, as `TokioServer` runs it) on a
  listener with a backlog of one per stream, capped by `net.core.somaxconn`: one upstream for
  every backend, and no run fails on any of them.
* **A thread per open response.** With the resets gone, the blocking child crashed instead: a
  std thread takes about four memory mappings (stack and guard, signal stack and guard), a run
  took two threads (the consumer and `UreqClient`'s exchange thread), and the process hit
  `vm.max_map_count` (65,530) at about 17,000 threads, where a thread start or an allocation
  fails. `UreqClient` now hands every response body to one shared reader thread (`epoll`
  through rustix) once the head has arrived; the exchange thread only connects, sends and
  waits for the head, then ends. The consumer threads are untouched: one std thread per run
  with the default stack, as a user writes it.

The buffers went down too: ureq's input buffer is 16 KiB + 1 byte (the largest accepted
response head is now 16 KiB, Node.js's limit; a larger one is `ResponseHeadTooLarge`), the
output buffer 8 KiB (it must hold the longest header line), and the 16 KiB read buffer is the
reader thread's, shared. Measured at 10,000 streams after these changes: about 60 KiB per
stream (59.6 and 60.7 KiB in two runs, with about 8,500 of the 15-delta streams open at
once) with no failed run; with all 10,000 open together (the 40-delta streams of this page)
it reads about 62 KiB: within the ≤ 64 KiB target, with little margin. What a stream costs now: its consumer thread (touched stack pages and thread
state), the 24 KiB of ureq buffers, the channel and the run itself. With streams of 15 deltas
× 200 ms, not all 10,000 runs were open at once on the blocking row (about 8,400 to 9,600):
starting 10,000 threads, plus a short-lived exchange thread each, took longer on 2 CPUs than
the first runs lasted. The streams are now 40 deltas × 200 ms (8 s), so that every backend
holds its 10,000 streams open together (the "most open (client)" column); KiB per stream divides
by the runs open at the peak. Left to do: doing connect,
request and head on the reader thread too (non-blocking, through ureq-proto) would remove the
exchange thread and its start-up cost; a smaller or growable input buffer would need a
transport with its own buffers under TLS. The threaded server pays a thread per streaming
connection (its row is in the table). The 10,000-stream run is one repetition per backend and
shares the 2 CPUs with the loader and the upstream: treat the numbers as ±10 %.

### 6. SSE decoder — met, after a fix in agent-core

Before this bench, the decoder ran at 320–490 MB/s on the 64 MiB stream. `perf` showed three
causes, all in `agent-core/src/sse/decoder.rs`, and they were fixed there (a local change with
the same behaviour, plus a unit test of the new line search):

* `String::from_utf8_lossy` on every line: its `Utf8Chunks` iterator validates byte by byte
  (33 % of the time). Now `str::from_utf8` first (word-at-a-time for ASCII), the lossy path
  only for invalid input.
* The line-end search was a byte loop (20 %). Now it tests eight bytes at a time (SWAR).
* Each event's data was allocated, then reallocated for its trailing `\n`. Now one allocation
  of the right size.

Old and new decoder side by side on the same input: 460–540 MB/s before, 1.3–1.6 GB/s after.
What remains per event: every pushed chunk is copied into the decoder's buffer (14 % of the
time), and each event allocates two strings (its data and its `"message"` type; making
`SseEvent::event` a `Cow<'static, str>` would save one, but changes a public type);
`memchr::memchr2` would be about 10 % faster than the SWAR search. Linearity was already right:
at every line length, 1 KiB chunks cost well under 2× a single chunk (the extra is a buffer
append per push), so an 8 MiB line in 8,192 chunks stays in milliseconds. eventsource-stream re-parses its
whole buffer for every chunk and copies the rest of the buffer after every line, so its time
grows with the square of the line length (its ladder above stops early for that reason), and
it is several times slower on ordinary streams.

### 7. Agent construction — met

Building an agent allocates a handful of small blocks: the `Arc` of the agent, the tool index
(a `HashMap` with one name) and, with a new model, the model's configuration. Deriving a
tool's JSON Schema is the expensive part (about 5 µs with schemars), which is why the table
shows it separately: build tools once and share them (`AgentBuilder::shared_tool`).

### 8. Stores (no target)

The memory store costs nothing measurable on top of the server's own memory: its writes
complete synchronously (`StoreWrite::Done`), so a burst of deltas is one lock and one vector
append, with no blocking job and no future. The database stores pay per *write*, not per
event: the server hands the store every event that is ready while the previous write is in
flight, so a run whose model emits deltas faster than the database commits writes them in
batches of tens to hundreds (one blocking job and one transaction each), and its cost per
event falls as the burst grows. Their per-event cost in the table is therefore an upper bound
for a real model, which emits a few hundred deltas per second, far below any row.
SQLite serializes writers on one lock, so 100 concurrent runs share one commit stream (the
`100 runs` column), and every write of a run waits for the commit of the one before it;
PostgreSQL's cost is its round trips (about six statements per transaction on 127.0.0.1),
paid once per batch. Left to do: a prepared-statement cache for PostgreSQL, and group commit
across runs (one transaction for the ready batches of several runs) for SQLite.
"#;
