#!/usr/bin/env python3
"""Buffering mutations: every one must be caught by the conformance suite.

Applies a curated set of buffering mutations (a server that holds frames back, a client
that reads the whole body, a run stream without its cooperative budget, ...) to a scratch
copy of the repository, one at a time, runs the tests that should catch each one on every
backend it applies to, and prints a markdown table: mutation x backend -> catching cases.

Exits 0 when every mutation was caught by at least one case on every backend it applies
to, 1 when one was not (or did not build), 2 when a mutation no longer applies (its `old`
text does not occur exactly once: the source changed and the mutation must be updated,
never silently skipped).

    python3 conformance/mutants/mutants.py              # all of them (slow: ~1 hour)
    python3 conformance/mutants/mutants.py --list
    python3 conformance/mutants/mutants.py --only server-hyper-collect --out table.md

The scratch copy is a detached git worktree of HEAD (committed code only) in
`target/mutants-scratch`, reset with `git checkout -- .` after every mutation; it builds
into its own `CARGO_TARGET_DIR` (`target/mutants`) so that each mutation rebuilds only the
crates it touches. Nothing outside the scratch copy is modified. Python 3.11, stdlib only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------
# Backends: how to run a backend's tests, and the flavours its test names start with.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str
    what: str
    cargo: tuple[str, ...]


BACKENDS = {
    b.name: b
    for b in [
        Backend("tokio", "backend-tokio (current_thread, multi_thread)",
                ("test", "-p", "backend-tokio", "--test", "conformance")),
        Backend("smol", "backend-smol (single_thread, multi_thread)",
                ("test", "-p", "backend-smol", "--test", "conformance")),
        Backend("threads", "backend-blocking",
                ("test", "-p", "backend-blocking", "--test", "conformance")),
        Backend("kit", "the kit's stack (conformance example futures_executor_backend)",
                ("test", "-p", "conformance", "--example", "futures_executor_backend")),
        Backend("cli", "agent-cli (tests/cli.rs, every --runtime)",
                ("test", "-p", "agent-cli", "--test", "cli")),
    ]
}

# --------------------------------------------------------------------------------------
# Mutations: data. Every `old` must occur exactly once in its file.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    file: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutation:
    name: str
    summary: str
    edits: tuple[Edit, ...]
    backends: tuple[str, ...]
    filters: tuple[str, ...]
    # Why the mutation leaves out a backend that runs this code, if it does.
    note: str = ""


IDLE = "std::time::Duration::from_millis(40)"
SIZE = "8 * 1024"


def hold_adapter(policy: str, item: str, stream: str) -> str:
    """Rust source of `MutantHold<S>`: a stream adapter that holds chunks back.

    policy: "collect" (until the end), "idle" (until 40 ms pass with no new chunk),
    "size" (until 8 KiB are held), "coalesce" (8 KiB or 40 ms idle, whichever first).
    item: "bytes" (a server's frames, `Bytes`) or "result" (a client's body,
    `Result<Bytes, E>`; an error is handed on after the bytes held before it).
    stream: the path of the `Stream` trait in that crate.
    """
    idle = policy in ("idle", "coalesce")
    size = policy in ("size", "coalesce")
    ok = (lambda x: f"Ok({x})") if item == "result" else (lambda x: x)
    on_chunk = ""
    if idle:
        on_chunk += (f"this.idle = Some(agent_core::runtime::TimerSleep::new("
                     f"std::time::Instant::now() + {IDLE}));\n")
    if size:
        on_chunk += (f"if this.held.len() >= {SIZE} {{ "
                     f"return Poll::Ready(Some({ok('this.take()')})); }}\n")
    on_pending = ""
    if idle:
        on_pending = f"""
        if let Some(idle) = this.idle.as_mut() {{
            if std::future::Future::poll(std::pin::Pin::new(idle), cx).is_ready() {{
                this.idle = None;
                if !this.held.is_empty() {{
                    return Poll::Ready(Some({ok('this.take()')}));
                }}
            }}
        }}"""
    if item == "result":
        generics = "<S, E>"
        bound = f"S: {stream}<Item = Result<bytes::Bytes, E>>, E: Unpin"
        err_arm = """
                Poll::Ready(Some(Err(err))) => {
                    if this.held.is_empty() {
                        return Poll::Ready(Some(Err(err)));
                    }
                    this.pending = Some(Err(err));
                    return Poll::Ready(Some(Ok(this.take())));
                }"""
    else:
        generics = "<S>"
        bound = f"S: {stream}<Item = bytes::Bytes>"
        err_arm = ""
    return f"""

// MUTANT (conformance/mutants/mutants.py): chunks are held back ({policy}).
#[allow(dead_code)]
struct MutantHold<S: {stream}> {{
    inner: std::pin::Pin<Box<S>>,
    held: Vec<u8>,
    idle: Option<agent_core::runtime::TimerSleep>,
    pending: Option<S::Item>,
    ended: bool,
}}

impl<S: {stream}> std::fmt::Debug for MutantHold<S> {{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {{
        f.write_str("MutantHold")
    }}
}}

#[allow(dead_code)]
impl<S: {stream}> MutantHold<S> {{
    fn new(inner: S) -> Self {{
        MutantHold {{ inner: Box::pin(inner), held: Vec::new(), idle: None, pending: None, ended: false }}
    }}
    fn take(&mut self) -> bytes::Bytes {{
        bytes::Bytes::from(std::mem::take(&mut self.held))
    }}
}}

impl{generics} {stream} for MutantHold<S> where {bound} {{
    type Item = S::Item;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {{
        use std::task::Poll;
        let this = self.get_mut();
        if let Some(item) = this.pending.take() {{
            return Poll::Ready(Some(item));
        }}
        if this.ended {{
            return Poll::Ready(None);
        }}
        loop {{
            match {stream}::poll_next(this.inner.as_mut(), cx) {{
                Poll::Ready(Some({ok('chunk')})) => {{
                    this.held.extend_from_slice(&chunk);
                    {on_chunk}
                }}{err_arm}
                Poll::Ready(None) => {{
                    this.ended = true;
                    if this.held.is_empty() {{
                        return Poll::Ready(None);
                    }}
                    return Poll::Ready(Some({ok('this.take()')}));
                }}
                Poll::Pending => break,
            }}
        }}{on_pending}
        Poll::Pending
    }}
}}
"""


POLICY_WORDS = {
    "collect": "collect-then-write: every frame held until the stream ends",
    "idle": "coalesce-on-idle: frames held until 40 ms pass with no new one",
    "size": "coalesce-by-size: frames held until 8 KiB are held or the stream ends",
}

SERVER_FILTERS = ("conformance_incremental_server", "conformance_free_running_server")
CLIENT_FILTERS = ("conformance_incremental_http", "conformance_free_running_http")

# Anchors (exact text of the current sources).
BODY_RS = "agent-hyper/src/body.rs"
HYPER_SERVER_RS = "agent-hyper/src/server.rs"
HYPER_CLIENT_RS = "agent-hyper/src/client.rs"
CONNECTION_RS = "backend-blocking/src/connection.rs"
UREQ_CLIENT_RS = "backend-blocking/src/client.rs"
REQWEST_CLIENT_RS = "backend-tokio/src/client.rs"


def hyper_server(policy: str) -> Mutation:
    return Mutation(
        name=f"server-hyper-{policy}",
        summary=f"hyper server (AgentBody::poll_frame): {POLICY_WORDS[policy]}",
        edits=(
            Edit(BODY_RS, "use http_body::{Body, Frame, SizeHint};\n",
                 "use http_body::{Body, Frame, SizeHint};\n"
                 + hold_adapter(policy, "bytes", "futures_core::Stream")),
            Edit(BODY_RS, "    Stream(ResponseBody),\n", "    Stream(MutantHold<ResponseBody>),\n"),
            Edit(BODY_RS, "inner: Inner::Stream(stream),",
                 "inner: Inner::Stream(MutantHold::new(stream)),"),
        ),
        backends=("tokio", "smol", "kit"),
        filters=SERVER_FILTERS,
    )


def threads_server(policy: str) -> Mutation:
    return Mutation(
        name=f"server-threads-{policy}",
        summary=f"threaded server (Connection::write_stream): {POLICY_WORDS[policy]}",
        edits=(
            Edit(CONNECTION_RS, "use crate::server::Shared;\n",
                 "use crate::server::Shared;\n"
                 + hold_adapter(policy, "bytes", "futures_core::Stream")),
            Edit(CONNECTION_RS,
                 "let ApiBody::Stream(mut body) = response.body else {\n"
                 "            return false;\n"
                 "        };\n",
                 "let ApiBody::Stream(body) = response.body else {\n"
                 "            return false;\n"
                 "        };\n"
                 "        let mut body = MutantHold::new(body);\n"),
            Edit(CONNECTION_RS,
                 "fn next_frame(&mut self, body: &mut ResponseBody) -> Frame {",
                 "fn next_frame(&mut self, body: &mut MutantHold<ResponseBody>) -> Frame {"),
        ),
        backends=("threads",),
        filters=SERVER_FILTERS,
    )


DEFER_WRITES = """

// MUTANT (conformance/mutants/mutants.py): writes are deferred and flushes are no-ops; the
// bytes reach the socket only when hyper shuts the connection down.
struct MutantDeferWrites<I> {
    inner: I,
    held: Vec<u8>,
    sent: usize,
}

impl<I: Read + Unpin> Read for MutantDeferWrites<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: Write + Unpin> Write for MutantDeferWrites<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.get_mut().held.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::task::Poll;
        let this = self.get_mut();
        while this.sent < this.held.len() {
            match std::pin::Pin::new(&mut this.inner).poll_write(cx, &this.held[this.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => this.sent += n,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
        std::pin::Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
"""


def mutations() -> list[Mutation]:
    ms: list[Mutation] = []
    # 1. Servers.
    for policy in ("collect", "idle", "size"):
        ms.append(hyper_server(policy))
    ms.append(Mutation(
        name="server-hyper-never-flush",
        summary="hyper server: the connection's I/O defers every write and ignores poll_flush "
                "(bytes reach the socket only at shutdown)",
        edits=(
            Edit(HYPER_SERVER_RS, "const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);\n",
                 "const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);\n" + DEFER_WRITES),
            Edit(HYPER_SERVER_RS,
                 "let io = WriteTimeout::new(io, timer, config.write_timeout);",
                 "let io = WriteTimeout::new(io, timer, config.write_timeout);\n"
                 "    let io = MutantDeferWrites { inner: io, held: Vec::new(), sent: 0 };"),
        ),
        backends=("tokio", "smol", "kit"),
        filters=SERVER_FILTERS,
        note="hyper flushes its own write buffer after every body frame, and a socket's "
             "poll_flush is a no-op, so 'never flush' is only meaningful as an I/O wrapper "
             "that defers the writes themselves",
    ))
    for policy in ("collect", "idle", "size"):
        ms.append(threads_server(policy))
    ms.append(Mutation(
        name="server-threads-never-flush",
        summary="threaded server: the response goes through a 64 KiB BufWriter around the "
                "socket, flushed only after the last chunk",
        edits=(
            Edit(CONNECTION_RS,
                 "let mut out = head.finish();\n"
                 "        if self.write_flush(&out).is_err() {\n"
                 "            return false;\n"
                 "        }\n",
                 "let mut out = head.finish();\n"
                 "        let Ok(socket) = self.stream.try_clone() else {\n"
                 "            return false;\n"
                 "        };\n"
                 "        let mut mutant_writer = io::BufWriter::with_capacity(64 * 1024, socket);\n"
                 "        if mutant_writer.write_all(&out).is_err() {\n"
                 "            return false;\n"
                 "        }\n"),
            Edit(CONNECTION_RS,
                 "if self.write_flush(&out).is_err() {\n"
                 "                        // The client is gone",
                 "if mutant_writer.write_all(&out).is_err() {\n"
                 "                        // The client is gone"),
            Edit(CONNECTION_RS,
                 "if chunked_body && self.write_flush(chunked::LAST_CHUNK).is_err() {\n"
                 "                        return false;\n"
                 "                    }\n",
                 "if chunked_body && mutant_writer.write_all(chunked::LAST_CHUNK).is_err() {\n"
                 "                        return false;\n"
                 "                    }\n"
                 "                    if mutant_writer.flush().is_err() {\n"
                 "                        return false;\n"
                 "                    }\n"),
        ),
        backends=("threads",),
        filters=SERVER_FILTERS,
        note="TcpStream::flush is a no-op, so deleting the flush alone changes nothing; "
             "the realistic bug is an unflushed BufWriter",
    ))

    # 2. Clients.
    for policy, words in (("collect", "read-whole-body: the body collected to its end, then "
                                      "yielded as one chunk"),
                          ("coalesce", "coalesce: chunks held until 8 KiB or 40 ms idle")):
        ms.append(Mutation(
            name=f"client-reqwest-{policy}",
            summary=f"tokio client (reqwest bytes_stream): {words}",
            edits=(
                Edit(REQWEST_CLIENT_RS, "use tokio::runtime::Handle;\n",
                     "use tokio::runtime::Handle;\n"
                     + hold_adapter(policy, "result", "futures_util::Stream")),
                Edit(REQWEST_CLIENT_RS,
                     "Box::pin(InRuntime::new(body_handle, body));",
                     "Box::pin(InRuntime::new(body_handle, MutantHold::new(body)));"),
            ),
            backends=("tokio",),
            filters=CLIENT_FILTERS,
        ))
        ms.append(Mutation(
            name=f"client-hyper-{policy}",
            summary=f"hyper client (ResponseBody::poll_next): {words}",
            edits=(
                Edit(HYPER_CLIENT_RS, "use crate::pool::{Pool, PooledConnection};\n",
                     "use crate::pool::{Pool, PooledConnection};\n"
                     + hold_adapter(policy, "result", "futures_core::Stream")),
                Edit(HYPER_CLIENT_RS, "body: Box::pin(body) as BodyStream,",
                     "body: Box::pin(MutantHold::new(body)) as BodyStream,"),
            ),
            backends=("smol", "kit"),
            filters=CLIENT_FILTERS,
        ))
    ms.append(Mutation(
        name="client-threads-collect",
        summary="threaded client (forward_body on the exchange thread): read_to_end, then "
                "one chunk over the channel",
        edits=(
            Edit(UREQ_CLIENT_RS,
                 "        match reader.read(&mut buf) {\n"
                 "            Ok(0) => {\n",
                 "        let mut mutant_whole = Vec::new();\n"
                 "        let mutant_read = reader.read_to_end(&mut mutant_whole);\n"
                 "        buf = mutant_whole;\n"
                 "        match mutant_read {\n"
                 "            Ok(0) => {\n"),
        ),
        backends=("threads",),
        filters=CLIENT_FILTERS,
    ))
    ms.append(Mutation(
        name="client-threads-coalesce",
        summary="threaded client (UreqBody, the channel's consumer side): chunks held until "
                "8 KiB or 40 ms idle",
        edits=(
            Edit(UREQ_CLIENT_RS, "use futures_core::Stream;\n",
                 "use futures_core::Stream;\n"
                 + hold_adapter("coalesce", "result", "futures_core::Stream")),
            Edit(UREQ_CLIENT_RS, "body: Box::pin(UreqBody {", "body: Box::pin(MutantHold::new(UreqBody {"),
            Edit(UREQ_CLIENT_RS,
                 "                        done: false,\n"
                 "                    }) as BodyStream,",
                 "                        done: false,\n"
                 "                    })) as BodyStream,"),
        ),
        backends=("threads",),
        filters=CLIENT_FILTERS,
    ))

    # 3. No cooperative budget.
    budget = Edit("agent-core/src/agent/run.rs",
                  "if this.ready_streak >= COOPERATIVE_BUDGET {",
                  "if false && this.ready_streak >= COOPERATIVE_BUDGET {")
    ms.append(Mutation(
        name="core-no-cooperative-budget",
        summary="agent-core RunStream: the budget of 64 ready events never yields",
        edits=(budget,),
        backends=("smol",),
        filters=("conformance_starvation",),
        note="tokio is left out: TokioRuntime::poll_cooperate spends tokio's own coop budget "
             "on every event, which still yields (see core-and-tokio-no-cooperative-budget); "
             "threads and the kit have no single-threaded flavour, where starvation cannot "
             "show (the starvation case is not applicable there)",
    ))
    ms.append(Mutation(
        name="core-and-tokio-no-cooperative-budget",
        summary="the same, and TokioRuntime::poll_cooperate always ready (no tokio coop budget)",
        edits=(
            budget,
            Edit("backend-tokio/src/runtime.rs",
                 "match tokio::task::coop::poll_proceed(cx) {",
                 "match Poll::Ready(()).map(|()| MutantRestore) {"),
            Edit("backend-tokio/src/runtime.rs",
                 "    fn poll_cooperate(&self, cx: &mut Context<'_>) -> Poll<()> {\n",
                 "    fn poll_cooperate(&self, cx: &mut Context<'_>) -> Poll<()> {\n"
                 "        struct MutantRestore;\n"
                 "        impl MutantRestore {\n"
                 "            fn made_progress(&self) {}\n"
                 "        }\n"
                 "        let _ = &cx;\n"),
        ),
        backends=("tokio",),
        filters=("conformance_starvation",),
    ))

    # 4. Batched tool completions.
    ms.append(Mutation(
        name="core-batched-tool-completions",
        summary="agent-core run_tools: tool_call_completed events emitted only once every "
                "call has finished",
        edits=(
            Edit("agent-core/src/agent/drive.rs",
                 "    let mut running = FuturesUnordered::new();\n",
                 "    let mut running = FuturesUnordered::new();\n"
                 "    let mut mutant_batch: Vec<(usize, f64)> = Vec::new();\n"),
            Edit("agent-core/src/agent/drive.rs",
                 """        let Some(event) = next else { break };
        match event {
            ToolEvent::Finished(i, result, started) => {
                let call = &calls[i];
                emitter
                    .emit(EventKind::ToolCallCompleted {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        result: result.clone(),
                        duration_ms: ms(started),
                    })
                    .await;
                results[i] = Some(result);
            }
""",
                 """        let Some(event) = next else {
            for (i, duration_ms) in mutant_batch.drain(..) {
                let call = &calls[i];
                emitter
                    .emit(EventKind::ToolCallCompleted {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        result: results[i].clone().expect("completed"),
                        duration_ms,
                    })
                    .await;
            }
            break;
        };
        match event {
            ToolEvent::Finished(i, result, started) => {
                mutant_batch.push((i, ms(started)));
                results[i] = Some(result);
            }
"""),
        ),
        backends=("tokio", "smol", "threads", "kit"),
        filters=("conformance_parallel",),
    ))

    # 5. CLI without flush.
    ms.append(Mutation(
        name="cli-no-flush",
        summary="agent-cli Renderer: no flush after each text delta",
        edits=(
            Edit("agent-cli/src/render.rs",
                 "                self.out.write_all(text.as_bytes())?;\n"
                 "                self.out.flush()?;\n"
                 "                if !text.is_empty() {\n"
                 "                    self.out_at_line_start",
                 "                self.out.write_all(text.as_bytes())?;\n"
                 "                if !text.is_empty() {\n"
                 "                    self.out_at_line_start"),
        ),
        backends=("cli",),
        filters=("deltas_reach_a_piped_stdout_one_by_one_on_every_runtime",
                 "free_running_deltas_reach_a_"),
    ))
    return ms


# --------------------------------------------------------------------------------------
# Running.
# --------------------------------------------------------------------------------------

TEST_LINE = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", re.M)
RUN_TIMEOUT = 30 * 60


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, text=True,
                          capture_output=True).stdout.strip()


def prepare_scratch(scratch: Path, commit: str) -> None:
    if (scratch / ".git").exists():
        git("checkout", "--quiet", "--force", "--detach", commit, cwd=scratch)
        git("checkout", "--", ".", cwd=scratch)
    else:
        scratch.parent.mkdir(parents=True, exist_ok=True)
        # --force: a scratch copy deleted by hand (or by `cargo clean`) is still registered.
        git("worktree", "add", "--force", "--detach", str(scratch), commit, cwd=REPO)
    if git("status", "--porcelain", "--untracked-files=no", cwd=scratch):
        sys.exit(f"error: the scratch copy {scratch} is not clean after reset")


def check_applies(m: Mutation, root: Path) -> list[str]:
    """Problems with `m` against the sources in `root` (empty when it applies)."""
    problems = []
    texts: dict[str, str] = {}
    for e in m.edits:
        path = root / e.file
        if not path.exists():
            problems.append(f"{m.name}: {e.file} does not exist")
            continue
        text = texts.setdefault(e.file, path.read_text())
        if e.old == e.new:
            problems.append(f"{m.name}: an edit of {e.file} changes nothing")
        n = text.count(e.old)
        if n != 1:
            first = e.old.strip().splitlines()[0]
            problems.append(f"{m.name}: in {e.file}, `old` occurs {n} times (must be once): "
                            f"{first!r}")
            continue
        texts[e.file] = text.replace(e.old, e.new)
    return problems


def apply(m: Mutation, root: Path) -> None:
    texts: dict[str, str] = {}
    for e in m.edits:
        text = texts.get(e.file) or (root / e.file).read_text()
        assert text.count(e.old) == 1, (m.name, e.file)
        texts[e.file] = text.replace(e.old, e.new)
    for f, text in texts.items():
        (root / f).write_text(text)


@dataclass
class Run:
    results: dict[str, str]  # test name -> ok / FAILED / ignored
    build_failed: bool
    seconds: float
    tail: str = ""


def run_tests(backend: Backend, filters: tuple[str, ...], root: Path, env: dict,
              log_dir: Path, label: str) -> Run:
    cmd = ["cargo", *backend.cargo, "--no-fail-fast", "--", *filters]
    started = time.monotonic()
    log(f"  {label} / {backend.name}: {' '.join(cmd)}")
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, text=True, capture_output=True,
                              timeout=RUN_TIMEOUT)
        out = proc.stdout + "\n" + proc.stderr
        code = proc.returncode
    except subprocess.TimeoutExpired as err:
        out = "\n".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                        for x in (err.stdout, err.stderr))
        out += f"\n(timed out after {RUN_TIMEOUT} s)"
        code = -1
    seconds = time.monotonic() - started
    (log_dir / f"{label}--{backend.name}.log").write_text(" ".join(cmd) + "\n\n" + out)
    results = dict(TEST_LINE.findall(out))
    build_failed = not results and code != 0
    failed = sorted(t for t, r in results.items() if r == "FAILED")
    log(f"  {label} / {backend.name}: {len(results)} tests, {len(failed)} failed, "
        f"{seconds:.0f} s" + (" (BUILD FAILED or no test ran)" if build_failed else ""))
    return Run(results, build_failed, seconds, "\n".join(out.splitlines()[-40:]))


def short(test: str) -> tuple[str, str]:
    """`tokio_current_thread::conformance_free_running_http` -> (case, flavour)."""
    flavour, _, case = test.rpartition("::")
    return case.removeprefix("conformance_"), flavour


def cell(failed: list[str], all_flavours: set[str]) -> str:
    by_case: dict[str, list[str]] = {}
    for t in failed:
        case, flavour = short(t)
        by_case.setdefault(case, []).append(flavour)
    parts = []
    for case, flavours in sorted(by_case.items()):
        if len(all_flavours) > 1 and set(flavours) != all_flavours:
            parts.append(f"`{case}` ({', '.join(sorted(flavours))})")
        else:
            parts.append(f"`{case}`")
    return "<br>".join(parts)


@dataclass
class Row:
    mutation: Mutation
    cells: dict[str, str] = field(default_factory=dict)
    uncaught: list[str] = field(default_factory=list)


def table(rows: list[Row]) -> str:
    used = [b for b in BACKENDS if any(b in r.mutation.backends for r in rows)]
    lines = ["| mutation | " + " | ".join(used) + " |",
             "|---|" + "---|" * len(used)]
    for r in rows:
        cells = [r.cells.get(b, "n/a") for b in used]
        lines.append(f"| `{r.mutation.name}`: {r.mutation.summary} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", metavar="NAME", help="run one mutation")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--out", metavar="FILE", help="also write the markdown table to FILE")
    ap.add_argument("--scratch", default=str(REPO / "target" / "mutants-scratch"),
                    help="the scratch worktree (default: target/mutants-scratch)")
    ap.add_argument("--target-dir", default=str(REPO / "target" / "mutants"),
                    help="its CARGO_TARGET_DIR (default: target/mutants)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the unmutated run (which proves the catching tests pass "
                         "without the mutation)")
    args = ap.parse_args()

    ms = mutations()
    names = [m.name for m in ms]
    assert len(set(names)) == len(names), "mutation names must be unique"
    for m in ms:
        assert m.backends and all(b in BACKENDS for b in m.backends), m.name
    if args.list:
        for m in ms:
            print(f"{m.name:40} {', '.join(m.backends):28} {m.summary}")
        return 0
    if args.only:
        ms = [m for m in ms if m.name == args.only]
        if not ms:
            sys.exit(f"error: no mutation named {args.only!r}; see --list")

    commit = git("rev-parse", "HEAD", cwd=REPO)
    scratch = Path(args.scratch).resolve()
    prepare_scratch(scratch, commit)
    problems = [p for m in ms for p in check_applies(m, scratch)]
    if problems:
        print("error: mutations that no longer apply (update them to the current code):",
              *problems, sep="\n  ", file=sys.stderr)
        return 2

    env = dict(os.environ, CARGO_TARGET_DIR=str(Path(args.target_dir).resolve()),
               CARGO_TERM_COLOR="never")
    log_dir = Path(args.target_dir).resolve() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(f"{len(ms)} mutation(s) on {commit[:12]}; scratch {scratch}; logs in {log_dir}")

    # Baseline: every test a mutation relies on passes without it.
    baseline: dict[str, dict[str, str]] = {}
    if not args.no_baseline:
        log("baseline (no mutation)")
        for b in BACKENDS.values():
            filters = tuple(sorted({f for m in ms if b.name in m.backends for f in m.filters}))
            if not filters:
                continue
            run = run_tests(b, filters, scratch, env, log_dir, "baseline")
            if run.build_failed:
                print(run.tail, file=sys.stderr)
                sys.exit(f"error: the unmutated {b.name} tests did not build or run")
            baseline[b.name] = run.results
            bad = sorted(t for t, r in run.results.items() if r == "FAILED")
            if bad:
                log(f"  warning: failing without any mutation on {b.name}: {', '.join(bad)} "
                    "(they do not count as catching)")

    rows = []
    for m in ms:
        log(f"mutation {m.name}")
        row = Row(m)
        apply(m, scratch)
        try:
            for bname in m.backends:
                b = BACKENDS[bname]
                run = run_tests(b, m.filters, scratch, env, log_dir, m.name)
                if run.build_failed:
                    row.cells[bname] = "**DID NOT BUILD**"
                    row.uncaught.append(f"{bname} (did not build; see the log)")
                    print(run.tail, file=sys.stderr)
                    continue
                base = baseline.get(bname, {})
                failed = sorted(t for t, r in run.results.items()
                                if r == "FAILED" and base.get(t, "ok") == "ok")
                flavours = {short(t)[1] for t in run.results}
                if failed:
                    row.cells[bname] = cell(failed, flavours)
                else:
                    row.cells[bname] = "**NOT CAUGHT**"
                    row.uncaught.append(bname)
        finally:
            git("checkout", "--", ".", cwd=scratch)
        rows.append(row)

    elapsed = time.monotonic() - started
    out = table(rows)
    notes = [f"- `{r.mutation.name}`: {r.mutation.note}" for r in rows if r.mutation.note]
    report = (out + "\n\n" + ("\n".join(notes) + "\n\n" if notes else "")
              + f"Ran on {commit[:12]} on {dt.date.today().isoformat()} in "
                f"{elapsed / 60:.0f} min.\n")
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    uncaught = [(r.mutation.name, b) for r in rows for b in r.uncaught]
    if uncaught:
        for name, b in uncaught:
            print(f"NOT CAUGHT: {name} on {b}", file=sys.stderr)
        return 1
    log(f"every mutation was caught ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
