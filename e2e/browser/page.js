// Runs inside headless Chromium, on a page served from another origin than `agent serve`.
// Each scenario returns a plain object the Node driver (check.mjs) checks; nothing here
// decides pass or fail except by throwing on a protocol error.

/** Split an SSE byte stream into frames; `onFrame({id, event, data})` per frame. */
function sseParser(onFrame) {
  let buffer = "";
  return (text) => {
    buffer += text;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const frame = { id: null, event: "message", data: "" };
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") frame.id = value;
        else if (field === "event") frame.event = value;
        else if (field === "data") frame.data += value;
      }
      if (frame.data) onFrame(frame);
    }
  };
}

/**
 * POST /v1/runs and read the stream with fetch + ReadableStream. `stopAfterDeltas` aborts
 * the request (a forced disconnect) after that many text deltas. Every event is recorded
 * with the time it arrived and the index of the network read that carried it.
 */
async function streamRun(agent, input, stopAfterDeltas) {
  const controller = new AbortController();
  const response = await fetch(`${agent}/v1/runs`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ input }),
    signal: controller.signal,
  });
  const runId = response.headers.get("x-run-id");
  const events = [];
  let read = 0;
  let deltas = 0;
  let stopped = false;
  const decoder = new TextDecoder();
  const parse = sseParser((frame) => {
    const event = JSON.parse(frame.data);
    events.push({ seq: event.seq, type: event.type, text: event.text ?? null, at: performance.now(), read });
    if (event.type === "text_delta") deltas += 1;
  });
  const reader = response.body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      read += 1;
      parse(decoder.decode(value, { stream: true }));
      if (stopAfterDeltas !== undefined && deltas >= stopAfterDeltas) {
        stopped = true;
        controller.abort();
        break;
      }
    }
  } catch (err) {
    if (!stopped) throw err;
  }
  return { status: response.status, runId, events, reads: read, stopped };
}

/** Read a run's events with EventSource until its terminal event (or `limitMs`). */
function eventSourceRun(url, limitMs) {
  return new Promise((resolve) => {
    const events = [];
    let opens = 0;
    let errors = 0;
    const source = new EventSource(url);
    const finish = (why) => {
      source.close();
      resolve({ events, opens, errors, why });
    };
    const timer = setTimeout(() => finish("timeout"), limitMs);
    source.onopen = () => { opens += 1; };
    source.onerror = () => { errors += 1; };
    const types = [
      "run_started", "model_request_started", "model_request_completed", "text_delta",
      "reasoning_delta", "tool_call_delta", "tool_call_started", "tool_call_completed",
      "run_completed", "run_failed", "run_cancelled",
    ];
    for (const type of types) {
      source.addEventListener(type, (message) => {
        const event = JSON.parse(message.data);
        events.push({ seq: event.seq, type: event.type, text: event.text ?? null, at: performance.now(), lastEventId: message.lastEventId });
        if (["run_completed", "run_failed", "run_cancelled"].includes(type)) {
          clearTimeout(timer);
          finish("terminal");
        }
      });
    }
  });
}

window.scenarios = {
  /** A whole run through fetch + ReadableStream. */
  async stream(agent) {
    return streamRun(agent, "hello from the browser");
  },

  /**
   * Stream a run, abort after 5 deltas, then resume with EventSource from the last seq
   * seen, through `relay` (a proxy that cuts the EventSource's first connection after a
   * few frames, so the browser itself reconnects with Last-Event-ID).
   */
  async resume(agent, relay) {
    const first = await streamRun(agent, "resume me", 5);
    const last = first.events[first.events.length - 1].seq;
    const url = `${relay}/v1/runs/${first.runId}/events?last_event_id=${last}`;
    const second = await eventSourceRun(url, 20000);
    const status = await (await fetch(`${agent}/v1/runs/${first.runId}`)).json();
    return { first, second, status };
  },

  /** Stream a run and cancel it through POST /v1/runs/{id}/cancel after 3 deltas. */
  async cancel(agent) {
    const response = await fetch(`${agent}/v1/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ input: "cancel me" }),
    });
    const runId = response.headers.get("x-run-id");
    const events = [];
    let deltas = 0;
    let cancel = null;
    const decoder = new TextDecoder();
    const parse = sseParser((frame) => {
      const event = JSON.parse(frame.data);
      events.push({ seq: event.seq, type: event.type });
      if (event.type === "text_delta") deltas += 1;
    });
    const reader = response.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parse(decoder.decode(value, { stream: true }));
      if (deltas >= 3 && cancel === null) {
        const answer = await fetch(`${agent}/v1/runs/${runId}/cancel`, { method: "POST" });
        cancel = { status: answer.status, body: await answer.json() };
      }
    }
    return { runId, events, cancel };
  },

  /** From an origin the server does not allow: both kinds of POST must start no run. */
  async refused(agent) {
    let corsError = null;
    try {
      await fetch(`${agent}/v1/runs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ input: "from a disallowed origin" }),
      });
    } catch (err) {
      corsError = String(err);
    }
    // A "simple" cross-site POST (no preflight): the browser sends it and hides the answer.
    await fetch(`${agent}/v1/runs`, {
      method: "POST",
      mode: "no-cors",
      headers: { "content-type": "text/plain" },
      body: JSON.stringify({ input: "form-style post" }),
    });
    return { corsError };
  },
};
