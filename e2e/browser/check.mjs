// Headless Chromium against `agent serve`, cross-origin: a page served from one origin
// streams a run with fetch + ReadableStream, resumes one with EventSource after a forced
// disconnect (and after the browser's own reconnect with Last-Event-ID), cancels one, and
// a page from an origin the server does not allow starts none.
//
// usage: node check.mjs AGENT_BINARY RUNTIME
import { spawn } from "node:child_process";
import http from "node:http";
import net from "node:net";
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [agentBinary, runtime] = process.argv.slice(2);
if (!agentBinary || !runtime) {
  console.error("usage: node check.mjs AGENT_BINARY RUNTIME");
  process.exit(2);
}
const here = new URL(".", import.meta.url).pathname;
const pageScript = readFileSync(`${here}/page.js`, "utf8");
const failures = [];
const check = (ok, what) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
};

/** Serve the test page on an ephemeral port: its origin is one the agent sees. */
function pageServer() {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      if (req.url === "/page.js") {
        res.writeHead(200, { "content-type": "text/javascript" });
        res.end(pageScript);
      } else {
        res.writeHead(200, { "content-type": "text/html" });
        res.end('<!doctype html><title>agent e2e</title><script src="/page.js"></script>');
      }
    });
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

/**
 * A TCP relay to the agent that cuts the first `/events` connection after it carried
 * three text deltas: the browser's EventSource must reconnect by itself, with
 * Last-Event-ID, and miss nothing.
 */
function cuttingRelay(target) {
  let cut = 0;
  return new Promise((resolve) => {
    const server = net.createServer((client) => {
      const upstream = net.connect(target.port, target.hostname);
      let request = "";
      let deltas = 0;
      let cutting = false;
      client.on("data", (chunk) => {
        request += chunk.toString("latin1");
        if (!cutting && cut === 0 && /^GET \S*\/events/.test(request)) {
          cutting = true;
          cut += 1;
        }
        upstream.write(chunk);
      });
      upstream.on("data", (chunk) => {
        client.write(chunk);
        if (cutting) {
          deltas += (chunk.toString("utf8").match(/event: text_delta/g) || []).length;
          if (deltas >= 3) {
            client.destroy();
            upstream.destroy();
          }
        }
      });
      const close = () => { client.destroy(); upstream.destroy(); };
      client.on("error", close);
      upstream.on("error", close);
      client.on("close", close);
      upstream.on("close", close);
    });
    server.listen(0, "127.0.0.1", () => resolve({ server, cuts: () => cut }));
  });
}

function startAgent(allowedOrigin) {
  return new Promise((resolve, reject) => {
    const child = spawn(agentBinary, [
      "serve", "--runtime", runtime, "--addr", "127.0.0.1:0", "--demo", "--demo-pace-ms", "40",
      "--allow-origin", allowedOrigin, "--log", "info",
    ], { stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    const timer = setTimeout(() => reject(new Error(`agent serve did not start:\n${log}`)), 20000);
    child.stderr.on("data", (chunk) => {
      log += chunk.toString();
      const found = log.match(/serving on (http:\/\/[0-9.:]+) /);
      if (found && !child.base) {
        child.base = found[1];
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.log = () => log;
    child.on("exit", (code) => {
      if (!child.base) reject(new Error(`agent serve exited ${code}:\n${log}`));
    });
  });
}

const within = (ms, promise, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)),
  ]);

/** seqs 0, 1, … n, each once, ending with a terminal event. */
function contiguous(events) {
  return events.every((e, i) => e.seq === i);
}

const allowedPage = await pageServer();
const refusedPage = await pageServer();
const allowedOrigin = `http://127.0.0.1:${allowedPage.address().port}`;
const refusedOrigin = `http://127.0.0.1:${refusedPage.address().port}`;
const agent = await startAgent(allowedOrigin);
const relay = await cuttingRelay(new URL(agent.base));
const relayBase = `http://127.0.0.1:${relay.server.address().port}`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

try {
  console.log(`agent ${agent.base}, page ${allowedOrigin}, refused page ${refusedOrigin}`);

  // 1. A page from an origin that is not allowed starts no run.
  const refused = await browser.newPage();
  await refused.goto(`${refusedOrigin}/`);
  const denied = await within(30000, refused.evaluate((a) => window.scenarios.refused(a), agent.base), "refused");
  check(denied.corsError !== null, `a JSON POST from ${refusedOrigin} fails in the browser (${denied.corsError})`);
  // The server's request log: both attempts were answered 403 and no run started.
  const deadline = Date.now() + 5000;
  while ((agent.log().match(/status=403/g) || []).length < 2 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const forbidden = (agent.log().match(/status=403/g) || []).length;
  check(forbidden >= 2, `the preflight and the no-cors POST from the refused origin were answered 403 (${forbidden} seen)`);
  check(!/run_id=/.test(agent.log()), "no run was started from the refused origin");
  await refused.close();

  const page = await browser.newPage();
  await page.goto(`${allowedOrigin}/`);

  // 2. Streamed with fetch + ReadableStream, progressively.
  const streamed = await within(30000, page.evaluate((a) => window.scenarios.stream(a), agent.base), "stream");
  const deltas = streamed.events.filter((e) => e.type === "text_delta");
  const reads = new Set(deltas.map((e) => e.read)).size;
  check(streamed.status === 200, "POST /v1/runs from the allowed origin is answered 200");
  check(contiguous(streamed.events) && streamed.events.at(-1).type === "run_completed",
    `every event once, in order, ending run_completed (${streamed.events.length} events)`);
  check(deltas.length >= 20 && reads >= deltas.length / 2,
    `the ${deltas.length} text deltas arrived progressively, in ${reads} separate network reads`);
  const spread = deltas.at(-1).at - deltas[0].at;
  check(spread > 100, `first to last delta took ${spread.toFixed(0)} ms in the page (paced, not one burst)`);

  // 3. Forced disconnect, then EventSource from the last seq seen (its first connection
  //    cut by the relay, so the browser reconnects with Last-Event-ID by itself).
  const resumed = await within(40000, page.evaluate(([a, r]) => window.scenarios.resume(a, r), [agent.base, relayBase]), "resume");
  const all = [...resumed.first.events, ...resumed.second.events];
  check(resumed.first.stopped, `the first connection was aborted after ${resumed.first.events.length} events`);
  check(resumed.second.why === "terminal", `EventSource read up to the terminal event (${resumed.second.why})`);
  check(relay.cuts() === 1 && resumed.second.opens >= 2,
    `the relay cut the EventSource once and the browser reconnected (${resumed.second.opens} opens)`);
  check(contiguous(all), `across the abort and the reconnect, every seq once (${all.map((e) => e.seq).join(",")})`);
  const text = all.filter((e) => e.type === "text_delta").map((e) => e.text).join("");
  check(resumed.status.status === "completed" && resumed.status.result.text === text,
    "GET /v1/runs/{id}: completed, and its text is exactly the deltas read across both connections");
  const after = resumed.second.events.filter((e) => e.type === "text_delta");
  const gaps = after.slice(1).filter((e, i) => e.at - after[i].at > 5).length;
  check(gaps >= 5, `after resuming, deltas kept arriving one by one (${gaps} gaps over 5 ms between ${after.length} deltas)`);

  // 4. Cancel through POST /v1/runs/{id}/cancel.
  const cancelled = await within(30000, page.evaluate((a) => window.scenarios.cancel(a), agent.base), "cancel");
  check(cancelled.cancel && cancelled.cancel.status === 200 && cancelled.cancel.body.status === "cancelled",
    `POST /v1/runs/{id}/cancel answered ${JSON.stringify(cancelled.cancel)}`);
  check(contiguous(cancelled.events) && cancelled.events.at(-1).type === "run_cancelled",
    "the cancelled stream ended with run_cancelled, every seq once");
} catch (err) {
  check(false, `scenario error: ${err.stack || err}`);
} finally {
  await browser.close();
  agent.kill("SIGTERM");
  relay.server.close();
  allowedPage.close();
  refusedPage.close();
}

if (failures.length) {
  console.log(`agent log:\n${agent.log()}`);
  process.exit(1);
}
