//! The report: `docs/performance.md`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::Results;
use crate::config::Config;
use crate::construct::Variant;
use crate::http::Contender;
use crate::stats::Summary;
use crate::sys::Machine;

/// A number with a sensible number of digits.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 1e4 {
        group(v.round() as i64)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// An integer with thin thousands separators (`1,234,567`).
fn group(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 { format!("-{out}") } else { out }
}

fn range(a: f64, b: f64) -> String {
    format!("{} – {}", num(a), num(b))
}

fn ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}×")
    } else {
        "–".into()
    }
}

/// One target of the issue and how it went.
pub struct Target {
    /// What is measured.
    pub what: String,
    /// The goal.
    pub goal: &'static str,
    /// The measured value.
    pub measured: String,
    /// Met or not.
    pub met: bool,
}

/// The targets of the issue that the results can judge.
pub fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some(p) = &r.pipeline {
        for (flavor, s) in &p.rows {
            let x = s.median / p.floor.median;
            out.push(Target {
                what: format!("pipeline, {}", flavor.label()),
                goal: "≤ 2× floor",
                measured: format!("{} ({} ns/delta)", ratio(x), num(s.median)),
                met: x <= 2.0,
            });
        }
    }
    if let Some(h) = &r.http {
        let get = |c: Contender| h.rows.iter().find(|(k, _)| *k == c).map(|(_, s)| s.median);
        let floor = get(Contender::FloorReal).unwrap_or(f64::NAN);
        let peer = get(Contender::AsyncOpenAi).unwrap_or(f64::NAN);
        // Each backend on its default client: `TokioClient` on tokio (what
        // `backend_tokio::openai_model` and `agent serve` use; the `ReqwestClient` rows stay in
        // the table as a reference), `SmolClient` on smol, `UreqClient` on threads.
        use crate::exec::Flavor;
        for (c, s) in &h.rows {
            let (flavor, client) = match c {
                Contender::Backend(
                    Flavor::TokioCurrent | Flavor::TokioMulti | Flavor::TokioMultiBlockOn,
                ) => continue,
                Contender::Backend(flavor) => (flavor, ""),
                Contender::TokioClient(flavor @ (Flavor::TokioCurrent | Flavor::TokioMulti)) => {
                    (flavor, " with `TokioClient`")
                }
                _ => continue,
            };
            let x = s.median / floor;
            let y = s.median / peer;
            out.push(Target {
                what: format!("HTTP path, {}{client}", flavor.label()),
                goal: "≥ 0.9× floor (reqwest + eventsource-stream + serde), ahead of async-openai",
                measured: format!(
                    "{} floor, {} async-openai ({} deltas/s)",
                    ratio(x),
                    ratio(y),
                    num(s.median)
                ),
                met: x >= 0.9 && y > 1.0,
            });
        }
    }
    if let Some(h) = &r.http {
        use crate::exec::Flavor;
        let get = |c: Contender| h.rows.iter().find(|(k, _)| *k == c).map(|(_, s)| s.median);
        if let (Some(block_on), Some(spawned)) = (
            get(Contender::Backend(Flavor::TokioMultiBlockOn)),
            get(Contender::Backend(Flavor::TokioMulti)),
        ) {
            let x = block_on / spawned;
            out.push(Target {
                what: "tokio multi_thread, ReqwestClient: run polled in `block_on` vs in a spawned task".into(),
                goal: "≥ 0.9× the spawned shape",
                measured: format!("{} ({} vs {} deltas/s)", ratio(x), num(block_on), num(spawned)),
                met: x >= 0.9,
            });
        }
        if let (Some(block_on), Some(spawned)) = (
            get(Contender::TokioClient(Flavor::TokioMultiBlockOn)),
            get(Contender::TokioClient(Flavor::TokioMulti)),
        ) {
            let x = block_on / spawned;
            out.push(Target {
                what: "tokio multi_thread, `TokioClient` (the default): run polled in `block_on` vs in a spawned task".into(),
                goal: "≥ 0.9× the spawned shape",
                measured: format!("{} ({} vs {} deltas/s)", ratio(x), num(block_on), num(spawned)),
                met: x >= 0.9,
            });
        }
    }
    if let Some(rl) = &r.relay {
        let direct = rl.rows.first().map_or(f64::NAN, |row| row.rate.median);
        for row in rl.rows.iter().skip(1) {
            let server = row.server.unwrap_or("");
            let x = row.rate.median / direct;
            out.push(Target {
                what: format!("server in the path, {server}: throughput"),
                goal: "≥ 0.8× the floor client reading the upstream directly",
                measured: format!("{} ({} deltas/s)", ratio(x), num(row.rate.median)),
                met: x >= 0.8,
            });
            let cpu = row.cpu_us.as_ref().map_or(f64::NAN, |c| c.median);
            out.push(Target {
                what: format!("server in the path, {server}: server CPU per relayed event"),
                goal: "≤ 2 µs",
                measured: format!("{} µs", num(cpu)),
                met: cpu <= 2.0,
            });
        }
    }
    if let Some(h) = &r.http_scale {
        for row in &h.rows {
            let (goal, limit) = if row.backend == "blocking" {
                ("≤ 64 KiB per stream", 64.0)
            } else {
                ("≤ 40 KiB per stream", 40.0)
            };
            for (side, outcome) in [("client", &row.client), ("server", &row.server)] {
                let (measured, met) = match outcome {
                    Ok((kib, open, failed)) => (
                        format!(
                            "{} KiB per stream ({} open, {} failed)",
                            num(*kib),
                            group(*open as i64),
                            failed
                        ),
                        *kib <= limit && *failed == 0,
                    ),
                    Err(e) => (format!("failed: {e}"), false),
                };
                out.push(Target {
                    what: format!(
                        "{} concurrent paced streams through HTTP, {} side, {}",
                        group(h.streams as i64),
                        side,
                        row.backend
                    ),
                    goal,
                    measured,
                    met,
                });
            }
        }
    }
    if let Some(t) = &r.ttfe {
        for (flavor, row) in &t.rows {
            let overhead = &row.overhead;
            out.push(Target {
                what: format!("time-to-first-event overhead, {}", flavor.label()),
                goal: "< 100 µs (median)",
                measured: format!(
                    "{} µs median, {} µs p99",
                    num(overhead.median),
                    num(overhead.p99)
                ),
                met: overhead.median < 100.0,
            });
        }
    }
    if let Some(s) = &r.scale {
        for row in &s.rows {
            out.push(Target {
                what: format!(
                    "{} concurrent runs, {}",
                    group(s.runs as i64),
                    crate::scale::label(row.runtime)
                ),
                goal: "< 20 KiB per run",
                measured: format!("{} KiB per run", num(row.kib_per_run.median)),
                met: row.kib_per_run.median < 20.0 && row.error.is_none(),
            });
        }
    }
    if let Some(s) = &r.sse {
        out.push(Target {
            what: "SSE decoder throughput".into(),
            goal: "≥ 1 GB/s",
            measured: format!("{} MB/s", num(s.core.mb_per_s.median)),
            met: s.core.mb_per_s.median >= 1000.0,
        });
        if let Some(last) = s.core_linearity.last() {
            out.push(Target {
                what: format!(
                    "SSE decoder linearity ({} MiB line, {} chunks vs 1)",
                    last.line_bytes / (1024 * 1024),
                    group(last.chunks as i64)
                ),
                goal: "linear (ratio ≤ 2)",
                measured: ratio(last.ratio()),
                met: last.ratio() <= 2.0,
            });
        }
    }
    if let Some(c) = &r.construct {
        for row in &c.rows {
            if row.variant == Variant::NewModelAndTool {
                continue;
            }
            out.push(Target {
                what: format!("agent construction: {}", row.variant.label()),
                goal: "< 1 µs and < 2 KiB",
                measured: format!(
                    "{} ns, {} B retained ({} B allocated)",
                    num(row.ns.median),
                    row.retained,
                    row.allocated
                ),
                met: row.ns.median < 1000.0 && row.retained < 2048 && row.allocated < 2048,
            });
        }
    }
    out
}

fn targets_table(out: &mut String, r: &Results) {
    out.push_str("| measurement | target | measured | |\n|---|---|---|---|\n");
    for t in targets(r) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            t.what,
            t.goal,
            t.measured,
            if t.met { "met" } else { "**missed**" }
        );
    }
}

/// The targets as a short text for the terminal.
pub fn summary(r: &Results) -> String {
    let mut out = String::from("targets:\n");
    for t in targets(r) {
        let _ = writeln!(
            out,
            "  [{}] {} — {} — {}",
            if t.met { "met" } else { "MISSED" },
            t.what,
            t.goal,
            t.measured
        );
    }
    out
}

fn summary_cells(s: &Summary) -> String {
    format!(
        "{} | {} | {}",
        num(s.median),
        range(s.p10, s.p90),
        range(s.min, s.max)
    )
}

/// The whole page.
pub fn render(machine: &Machine, config: &Config, r: &Results, elapsed: Duration) -> String {
    let mut out = String::new();
    out.push_str("# Performance\n\n");
    let _ = writeln!(
        out,
        "<!-- Generated by `cargo run --release -p bench --{} --out FILE`; do not edit by hand. -->\n",
        if config.quick { " --quick" } else { "" }
    );
    out.push_str(
        "Every number on this page comes from one run of `cargo run --release -p bench` \
         (the `bench` crate of this repository) on the machine below. Contenders are measured \
         in alternation within each repetition (each repetition starts with a different one), \
         every ratio is taken against the floor measured in the same run, and each table gives \
         the median with its spread (10th–90th percentile and min–max). Numbers are reported, \
         never asserted in tests. The analysis of each result and what remains to be done is \
         in [What the numbers say](#what-the-numbers-say).\n\n",
    );
    if config.quick {
        out.push_str(
            "> **This is a `--quick` smoke run**: small sizes and few repetitions. \
             Its numbers only show that every measurement works.\n\n",
        );
    }
    out.push_str("## Machine\n\n| | |\n|---|---|\n");
    let _ = writeln!(out, "| CPUs (`nproc`) | {} |", machine.cpus);
    let _ = writeln!(out, "| CPU | {} |", machine.cpu_model);
    let _ = writeln!(out, "| memory | {:.0} GiB |", machine.memory_gib);
    let _ = writeln!(out, "| kernel | Linux {} |", machine.kernel);
    let _ = writeln!(out, "| rustc | `{}` |", machine.rustc);
    let _ = writeln!(
        out,
        "| open files (`ulimit -n`) | {} |",
        machine
            .open_files
            .map_or_else(|| "unknown".into(), |n| n.to_string())
    );
    let _ = writeln!(
        out,
        "| build | `--release` (workspace defaults: opt-level 3, no LTO) |"
    );
    let _ = writeln!(out, "| date | {} |", machine.date);
    if let Some(commit) = &machine.commit {
        let _ = writeln!(
            out,
            "| commit | `{commit}` (plus the work tree's changes) |"
        );
    }
    let _ = writeln!(
        out,
        "| load average (1 min) at start / end | {} / {} (2 CPUs: above about 1, other work was running) |",
        machine.load_at_start,
        crate::sys::load_average()
    );
    let _ = writeln!(out, "| bench run time | {:.0} s |\n", elapsed.as_secs_f64());

    out.push_str("## Targets\n\n");
    targets_table(&mut out, r);
    out.push('\n');

    if let Some(p) = &r.pipeline {
        out.push_str("## 1. Pipeline overhead\n\n");
        let _ = writeln!(
            out,
            "A scripted model plays one turn of {} text deltas; the agent streams them to a consumer \
             that counts them (`RunStream` polled with `StreamExt::next`; the blocking backend \
             iterates `backend_blocking::run`). The **floor** iterates the same {} strings, cloned \
             from the script as the scripted model clones its turn, as a plain \
             `futures::stream::iter` on the core's `block_on`. Each run also carries the 4 \
             lifecycle events (run and request started/completed). {} repetitions per contender; \
             nanoseconds per text delta.\n",
            group(p.deltas as i64),
            group(p.deltas as i64),
            p.reps
        );
        out.push_str(
            "| contender | median ns/delta | p10 – p90 | min – max | × floor |\n|---|---|---|---|---|\n",
        );
        let _ = writeln!(
            out,
            "| floor: `futures::stream::iter` | {} | 1.00× |",
            summary_cells(&p.floor)
        );
        for (flavor, s) in &p.rows {
            let _ = writeln!(
                out,
                "| agent on {} | {} | {} |",
                flavor.label(),
                summary_cells(s),
                ratio(s.median / p.floor.median)
            );
        }
        out.push('\n');
    }

    if let Some(h) = &r.http {
        out.push_str("## 2. HTTP end to end\n\n");
        let _ = writeln!(
            out,
            "An upstream inside the bench (std threads, `127.0.0.1:0`) answers every request with \
             the same pre-rendered response, one `write` per SSE frame (as servers write them): \
             {} OpenAI `chat.completion.chunk` events (one HTTP chunk each, chunked encoding, {} \
             bytes in all), a final chunk and `data: [DONE]`. Each contender sends one request \
             and consumes the whole stream; the time runs from sending the request to the last \
             delta. The **floor** is what a minimal real client does: reqwest (the version \
             backend-tokio uses), eventsource-stream for the SSE, and serde into typed structs \
             for each chunk's text. The **decoder-only floor** is reqwest with the core's \
             `SseDecoder`, counting content events without parsing them; the next row adds the \
             core's chunk parser (`OpenAiModel::parse_chunk`). async-openai runs on its own \
             reqwest, pointed at the upstream with `OpenAIConfig::with_api_base`. The floors, \
             async-openai and the tokio current-thread agent run on a tokio current-thread \
             runtime polled by `block_on` (the same executor shape); the two multi-thread rows \
             poll the run in a spawned task and on `block_on`'s own thread (what \
             `#[tokio::main]` code does). {} repetitions; text deltas per second (higher is \
             better).\n",
            group(h.chunks as i64),
            group(h.response_bytes as i64),
            h.reps
        );
        let get = |c: Contender| {
            h.rows
                .iter()
                .find(|(k, _)| *k == c)
                .map_or(f64::NAN, |(_, s)| s.median)
        };
        let floor = get(Contender::FloorReal);
        let parse = get(Contender::FloorSse);
        let peer = get(Contender::AsyncOpenAi);
        out.push_str(
            "| contender | median deltas/s | p10 – p90 | min – max | × floor | × decoder-only floor | × async-openai | × own client floor |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for (c, s) in &h.rows {
            let own = match c {
                Contender::Backend(flavor) => {
                    let client_flavor = if matches!(
                        flavor,
                        crate::exec::Flavor::TokioMulti | crate::exec::Flavor::TokioMultiBlockOn
                    ) {
                        crate::exec::Flavor::TokioCurrent
                    } else {
                        *flavor
                    };
                    ratio(s.median / get(Contender::ClientFloor(client_flavor)))
                }
                _ => "–".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                c.label(),
                summary_cells(s),
                ratio(s.median / floor),
                ratio(s.median / parse),
                ratio(s.median / peer),
                own
            );
        }
        out.push('\n');
    }

    if let Some(rl) = &r.relay {
        out.push_str("## 2b. The server in the path\n\n");
        let _ = writeln!(
            out,
            "The same upstream ({} chunks, one `write` per frame) behind each backend's server, \
             set up as `agent serve` sets it up: an agent on `OpenAiModel` with the backend's own \
             HTTP client, the server in a child process of its own. The floor client of section \
             2 (reqwest + eventsource-stream + serde, tokio current-thread) reads \
             `POST /v1/chat/completions` (`stream: true`) through the server, and, as the \
             reference, the upstream directly; the contenders alternate within each repetition. \
             **Server CPU per event** = the child's user + system time (`getrusage`, µs \
             resolution) during the request / text deltas relayed. **First delta** = µs from \
             sending the request to the first text delta of the burst. {} repetitions after \
             one warm-up. **Paced first delta**: the upstream then answers with the head at \
             once and one chunk every 2 ms; **chunk → delta** = µs from the upstream writing \
             its first chunk to the client parsing its first delta (through the server: \
             the server's client, the agent, the encoder, the server's write, the client), \
             **request → upstream** = µs from the client's request to the upstream having \
             read the server's request; {} trials per path, alternating.\n",
            group(rl.chunks as i64),
            rl.reps,
            rl.ttfd_trials
        );
        let direct = rl.rows.first().map_or(f64::NAN, |row| row.rate.median);
        out.push_str(
            "| path | median deltas/s | p10 – p90 | min – max | × direct floor | burst first delta µs | server CPU µs per event | p10 – p90 | paced: chunk → delta µs (median, p90) | paced: request → upstream µs |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        for row in &rl.rows {
            let name = row
                .server
                .map_or("direct: floor client → upstream".to_string(), |server| {
                    crate::relay::label(server).to_string()
                });
            let (cpu, cpu_range) = row.cpu_us.as_ref().map_or(("–".into(), "–".into()), |c| {
                (num(c.median), range(c.p10, c.p90))
            });
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {}, {} | {} |",
                name,
                summary_cells(&row.rate),
                ratio(row.rate.median / direct),
                num(row.first_delta_us.median),
                cpu,
                cpu_range,
                num(row.paced_delivery_us.median),
                num(row.paced_delivery_us.p90),
                num(row.paced_request_us.median)
            );
        }
        out.push('\n');
    }

    if let Some(h) = &r.http_scale {
        out.push_str("## 5b. Concurrent paced streams through HTTP\n\n");
        let _ = writeln!(
            out,
            "{} streams at once, each {} text deltas one every {} ms, per backend. **Client \
             side**: a child process starts {} runs at once (the async backends: a task per run \
             on two threads; blocking: a thread per run iterating it), each an `OpenAiModel` \
             on the backend's client against a paced chat-completions upstream (the agent \
             HTTP API on agent-hyper, as `TokioServer` runs it, in the bench process, on a \
             listener with a backlog of one per stream); KiB per stream = (peak `VmHWM` − `VmRSS` before, after 64 \
             warm-up runs) / the most runs open at once. **Server side**: the backend's server \
             in a child process with a model paced the same way, read by {} SSE clients of the \
             fan-out loader (section 4); KiB per stream = (`VmRSS` once every client has its \
             first delta − `VmRSS` after a warm-up) / streams open then. One repetition each.\n",
            group(h.streams as i64),
            h.deltas,
            h.pace_ms,
            group(h.streams as i64),
            group(h.streams as i64)
        );
        out.push_str(
            "| backend | client KiB per stream | most open (client) | incomplete runs | server KiB per stream | open when sampled (server) | failed clients |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for row in &h.rows {
            let cells = |o: &Result<(f64, usize, usize), String>| match o {
                Ok((kib, open, failed)) => {
                    format!("{} | {} | {}", num(*kib), group(*open as i64), failed)
                }
                Err(e) => format!("failed: {} | – | –", e.replace('|', "/")),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                crate::scale::http_label(row.backend),
                cells(&row.client),
                cells(&row.server)
            );
        }
        out.push('\n');
        for row in &h.rows {
            for (reason, runs) in &row.client_failures {
                let _ = writeln!(
                    out,
                    "* client side, {}: {} runs ended with `{}`",
                    row.backend,
                    group(*runs as i64),
                    reason.replace('`', "'")
                );
            }
            if let Some(e) = &row.server_first_error {
                let _ = writeln!(
                    out,
                    "* server side, {}: first failed client: `{}`",
                    row.backend,
                    e.replace('`', "'")
                );
            }
        }
        if h.rows
            .iter()
            .any(|r| !r.client_failures.is_empty() || r.server_first_error.is_some())
        {
            out.push('\n');
        }
    }

    if let Some(t) = &r.ttfe {
        out.push_str("## 3. Time to first event\n\n");
        let _ = writeln!(
            out,
            "The upstream answers every request with the response head at once, then one chunk \
             every {} ms (the first {} ms after the head), and records two moments of each \
             exchange: when it had read the request and when it wrote the first chunk. Each \
             backend measures from `agent.run()` to its first `text_delta` event, on a fresh \
             connection each time (the upstream closes every connection), then drops the run. \
             The **baseline** is a raw client (std `TcpStream`: connect, write the request, \
             read) measured to its first body byte; reqwest and ureq used directly (no backend, \
             no core) are measured to their first body chunk. To keep the upstream's pacing and \
             the jitter of its sleeping thread out of the numbers, each trial counts (start → \
             request read by the upstream) + (first chunk written → first event); **overhead** = \
             that sum − the raw client's median sum ({} µs: {} µs to get the request to the \
             upstream, {} µs to deliver a chunk). {} trials per contender, alternating; \
             microseconds.\n",
            t.pace_ms,
            t.pace_ms,
            num(t.baseline_request.median + t.baseline_delivery.median),
            num(t.baseline_request.median),
            num(t.baseline_delivery.median),
            t.trials
        );
        out.push_str(
            "| contender | median overhead | p90 | p99 | request part | chunk delivery | model | agent |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        let _ = writeln!(
            out,
            "| {} (whole latency, pacing included: median {} µs, p99 {} µs) | 0 | – | – | – | – | – | – |",
            crate::ttfe::Reference::Socket.label(),
            num(t.baseline_latency.median),
            num(t.baseline_latency.p99)
        );
        let rows = t
            .references
            .iter()
            .map(|(which, row)| (which.label().to_string(), row, false))
            .chain(
                t.rows
                    .iter()
                    .map(|(flavor, row)| (format!("agent on {}", flavor.label()), row, true)),
            );
        for (label, row, backend) in rows {
            let (model, agent) = if backend {
                (num(row.model.median), num(row.agent.median))
            } else {
                ("–".to_string(), "–".to_string())
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                label,
                num(row.overhead.median),
                num(row.overhead.p90),
                num(row.overhead.p99),
                num(row.request.median),
                num(row.delivery.median),
                model,
                agent
            );
        }
        out.push_str(
            "\nThe last four columns split the median overhead (they add up to about it): \
             **request part** = start → request read by the upstream, over the baseline's (the \
             client connecting and sending); **chunk delivery** = first chunk written → the \
             client hands it over, over the baseline's (a probe wraps each backend's \
             `HttpClient`); **model** = that chunk → the `OpenAiModel`'s first text delta (SSE \
             decoding, chunk parsing; a probe wraps the model); **agent** = that delta → the \
             consumer's `text_delta` event (agent loop, run stream, executor).\n\n",
        );
    }

    if let Some(f) = &r.fanout {
        out.push_str("## 4. Server fan-out\n\n");
        let _ = writeln!(
            out,
            "Each backend's server runs in a child process (so that its resident memory is its \
             own) with a model that yields {} text deltas, one every {} ms, each carrying the Unix \
             time in nanoseconds at which it was produced. A loader in the parent process (one \
             tokio current-thread task per client, at most 64 connecting at once) opens {} \
             concurrent `POST /v1/runs` streams, decodes them (chunked encoding, SSE, JSON) and \
             measures the **delivery latency** of every text delta: receive time − production \
             time (same clock, both processes on this machine). **Memory per stream** = (the \
             server's `VmRSS` once every client has received its first delta − its `VmRSS` after \
             a warm-up of 16 short streams) / the streams open at that moment. {} repetition(s) \
             per server, alternating; latencies pooled over them. The loader and the server share \
             the 2 CPUs. `ulimit -n` is {}: enough for {} connections on each side, so the \
             blocking backend serves the same {} clients (one thread each).\n",
            f.deltas,
            f.pace_ms,
            group(f.clients as i64),
            f.reps,
            crate::sys::open_files_limit().map_or_else(|| "unknown".into(), |n| n.to_string()),
            group(f.clients as i64),
            group(f.clients as i64),
        );
        out.push_str(
            "| server | latency p50 µs | p90 µs | p99 µs | max µs | KiB per stream | min – max | server CPU µs per delta | server cores busy | loader cores busy | deltas delivered | failed clients |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for row in &f.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
                crate::fanout::label(row.server),
                num(row.latency_us.median),
                num(row.latency_us.p90),
                num(row.latency_us.p99),
                num(row.latency_us.max),
                num(row.kib_per_stream.median),
                range(row.kib_per_stream.min, row.kib_per_stream.max),
                num(row.server_cpu_us_per_delta.median),
                num(row.server_cores.median),
                num(row.loader_cores.median),
                group(row.received as i64),
                group(f.expected as i64),
                row.errors
            );
        }
        let _ = writeln!(
            out,
            "\nStreams open when memory was sampled: {}. Server CPU is the child process's user + \
             system time during the load (runs, HTTP, SSE framing, its idle threads), divided by \
             the deltas delivered; \"cores busy\" is CPU time / wall time of the load, for the \
             server and for the loader (parent process).",
            f.rows
                .iter()
                .map(|r| format!("{} ({})", r.open_at_sample, r.server))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for row in &f.rows {
            if let Some(e) = &row.first_error {
                let _ = writeln!(
                    out,
                    "\nFirst failure on {}: `{}`",
                    crate::fanout::label(row.server),
                    e.replace('`', "'")
                );
            }
        }
        out.push('\n');
    }

    if let Some(s) = &r.scale {
        out.push_str("## 5. Scale\n\n");
        let _ = writeln!(
            out,
            "{} runs started at once in one process (a child process per measurement), each \
             consumed by a task of its own; each run's scripted model yields {} short text deltas, \
             each after a pause of 1 to 10 ms (a fixed pseudo-random sequence per run). \
             **Memory per run** = (peak `VmHWM` − `VmRSS` before the runs, after a warm-up of 64 \
             runs) / runs. **CPU per event** = user + system CPU time of the process during the \
             runs (`/proc/self/stat`, 10 ms ticks) / events received. {} repetition(s) per \
             runtime, alternating.\n",
            group(s.runs as i64),
            s.deltas,
            s.reps
        );
        out.push_str(
            "| runtime | KiB per run | min – max | CPU µs per event | min – max | wall s | peak concurrent runs | events per repetition | incomplete runs |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for row in &s.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                crate::scale::label(row.runtime),
                num(row.kib_per_run.median),
                range(row.kib_per_run.min, row.kib_per_run.max),
                num(row.cpu_us_per_event.median),
                range(row.cpu_us_per_event.min, row.cpu_us_per_event.max),
                num(row.wall_s.median),
                group(row.max_active as i64),
                group(row.events as i64),
                row.incomplete
            );
        }
        for row in &s.rows {
            if let Some(e) = &row.error {
                let _ = writeln!(
                    out,
                    "\n{} failed: `{}`",
                    crate::scale::label(row.runtime),
                    e
                );
            }
        }
        out.push('\n');
    }

    if let Some(s) = &r.sse {
        out.push_str("## 6. SSE decoder\n\n");
        let _ = writeln!(
            out,
            "**Throughput**: {} MiB of OpenAI chunk events ({} events, {} bytes each on average) \
             in {} KiB chunks, every event decoded and its data taken; MB/s = 10⁶ bytes per \
             second. The same chunks (`bytes::Bytes`) go to agent-core's `SseDecoder` (push, then \
             drain `next_item`) and to eventsource-stream 0.2 (`Eventsource::eventsource` on a \
             `futures::stream::iter`). Each decoder runs on a thread of its own, so that each \
             allocates from its own malloc arena (interleaved on one heap, eventsource-stream's \
             allocation pattern slowed the other decoder's allocations by a third). {} \
             repetitions, alternating.\n",
            s.stream_bytes / (1024 * 1024),
            group(s.core.events as i64),
            s.event_bytes,
            crate::sse::READ_CHUNK / 1024,
            s.reps
        );
        out.push_str(
            "| decoder | median MB/s | p10 – p90 | min – max | × eventsource-stream |\n|---|---|---|---|---|\n",
        );
        let _ = writeln!(
            out,
            "| agent-core `SseDecoder` | {} | {} |",
            summary_cells(&s.core.mb_per_s),
            ratio(s.core.mb_per_s.median / s.peer.mb_per_s.median)
        );
        let _ = writeln!(
            out,
            "| eventsource-stream 0.2 | {} | 1.00× |\n",
            summary_cells(&s.peer.mb_per_s)
        );
        let _ = writeln!(
            out,
            "**Linearity**: one event whose single `data` line is L bytes long, fed in one chunk \
             and in L / {} KiB chunks; a linear decoder takes about the same time either way. \
             The core's ladder goes up to {} MiB; eventsource-stream's stops at the first step \
             whose next one would take more than a few seconds. Medians of {} repetitions.\n",
            crate::sse::SMALL_CHUNK / 1024,
            s.line_bytes / (1024 * 1024),
            s.reps.max(3)
        );
        out.push_str(
            "| decoder | line | chunks | 1 chunk, ms | many chunks, ms | ratio |\n|---|---|---|---|---|---|\n",
        );
        for (name, ladder) in [
            ("agent-core `SseDecoder`", &s.core_linearity),
            ("eventsource-stream 0.2", &s.peer_linearity),
        ] {
            for step in ladder {
                let _ = writeln!(
                    out,
                    "| {} | {} KiB | {} | {} | {} | {} |",
                    name,
                    group((step.line_bytes / 1024) as i64),
                    group(step.chunks as i64),
                    num(step.one_chunk_s * 1e3),
                    num(step.many_chunks_s * 1e3),
                    ratio(step.ratio())
                );
            }
        }
        out.push('\n');
    }

    if let Some(c) = &r.construct {
        out.push_str("## 7. Agent construction\n\n");
        let _ = writeln!(
            out,
            "An agent with one tool (`get_weather`, a typed tool whose JSON Schema schemars \
             derives) on an OpenAI-compatible model. **Time**: {} agents built into a \
             preallocated vector (so that dropping them is not timed), {} samples. **Heap**: a \
             counting `#[global_allocator]` (a wrapper around `System`) counts the bytes \
             allocated while one agent is built and the bytes still held once it is built. Agno \
             publishes 3 µs and 6.6 KiB for the same measurement (Python, `Agent(model=…, \
             tools=[…])`).\n",
            group(c.iters as i64),
            c.reps
        );
        out.push_str(
            "| what is built | median ns | p10 – p90 | min – max | heap allocated, bytes | retained, bytes | allocations |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for row in &c.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                row.variant.label(),
                summary_cells(&row.ns),
                row.allocated,
                row.retained,
                row.allocations
            );
        }
        out.push('\n');
    }

    if let Some(st) = &r.stores {
        out.push_str("## 8. Stores: cost per event\n\n");
        let _ = writeln!(
            out,
            "Each store under `AgentService` (`ServerConfig::store`), on a 2-worker tokio \
             runtime, every event written before the body yields it. **One run**: {} ready \
             deltas, its SSE body read to the end. **100 concurrent runs**: {} runs of {} \
             deltas at once. Both are wall time per event (lower is better), so they include \
             the run itself: the first row (no store) is the floor. **Appended**: \
             `Store::write_run` of batches of 64 events, one after another. **Read back**: \
             `Store::read_events` in pages of 512 from a second handle (what a resuming \
             client on another instance costs). Median of {} repetitions, ns per event; the \
             events/s column is 10⁹ / the median.\n",
            group(st.one_run_deltas as i64),
            st.concurrent_runs,
            group(st.concurrent_deltas as i64),
            st.reps
        );
        if let Some(why) = &st.postgres_skipped {
            let _ = writeln!(out, "PostgreSQL was not measured: {why}.\n");
        }
        out.push_str(
            "| store | one run, ns/event | events/s | 100 runs, ns/event | events/s | appended, ns/event | events/s | read back, ns/event | events/s |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        let per_s = |ns: f64| group((1e9 / ns) as i64);
        for row in &st.rows {
            let opt = |s: &Option<Summary>| match s {
                Some(s) => format!("{} | {}", num(s.median), per_s(s.median)),
                None => "– | –".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.store,
                num(row.one_run.median),
                per_s(row.one_run.median),
                num(row.concurrent.median),
                per_s(row.concurrent.median),
                opt(&row.append),
                opt(&row.read)
            );
        }
        out.push('\n');
    }

    out.push_str(crate::notes::NOTES);
    out
}
