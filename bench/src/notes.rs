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

### 1. Pipeline overhead — missed (about 3–4.5× the floor, from run to run)

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

Still open: shrink the values that travel per delta (box the rare large variants:
`ToolCallDelta` in `ModelDelta`, `RunCompleted`/`ModelRequestCompleted`/tool-call payloads in
`EventKind`), and a cheaper hand-off than the `Arc<Mutex<Option<EventKind>>>` slot.

Together these remove perhaps half of the agent's own instructions, which would bring the
pipeline to about 2× the floor. The rest is inherent to the design the core chose on purpose: a
pull-based run that constructs a numbered event per delta and hands it over one at a time with
backpressure and a cooperative budget. 1.5× a bare `stream::iter` of the same strings is not
reachable without giving some of that up.

### 2. HTTP end to end — missed on tokio; smol and blocking near or at 0.9×

The floor is reqwest + the SSE decoder, counting events; it does not parse the chunks' JSON.
Every real client must (async-openai does, and so does the "floor + chunk JSON parse" row), and
that parse alone takes the floor down to 0.6–0.8×: `OpenAiModel::parse_chunk` costs about
450 ns per 190-byte chunk on this machine, of which about 200 ns is what serde_json needs just
to validate and skip the same JSON. `perf` on the tokio current-thread agent path: serde_json
in `parse_chunk` 24 %; tokio's scheduler and timer 13 %, the kernel 13 % and hyper/reqwest
11.5 % (the transport, shared with the floor: hyper hands the body over one HTTP chunk at a
time, through a channel from its connection task); `clock_gettime` 5 % (`OpenAiStream` reads
the clock once per SSE event for its inactivity timeout, and tokio's timer reads it when
parking); SSE decoding 5 %; the agent loop 5 %; `OpenAiStream` 3 %; `ReqwestClient`'s
`InRuntime` wrapper (entering the runtime handle on every poll) about 3 %.

So on reqwest the agent path cannot reach 0.9× of a floor that skips the JSON. Against
async-openai, which also parses every chunk on reqwest, tokio's agent path runs about level
with it: between 0.8× and 1.4× of it across our runs (its median ratio is in the table), so
"ahead of async-openai" is not reliably met on tokio either. smol and blocking get close to (or past) 0.9× of the reqwest floor only
because their own clients are three to four times cheaper per chunk than reqwest: they hand over
whatever one socket read returned, many SSE events at a time. Against their own client floors
(last column) the parse and the agent show in full.

What could be fixed: `parse_chunk` could deserialize borrowed strings and keep only the first
choice (a quick prototype with `Cow<str>` fields took 25 % off); `OpenAiStream` could count
events instead of reading the clock per event (the timer, when it fires, checks whether the
count moved); `ReqwestClient` could skip `Handle::enter` when it is already polled inside its
runtime.

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
