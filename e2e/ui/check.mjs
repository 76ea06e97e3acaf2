// Real front-end clients against a running `agent serve`: the Vercel AI SDK's
// DefaultChatTransport + readUIMessageStream on POST /v1/ai-sdk/chat, and @ag-ui/client's
// HttpAgent (which verifies AG-UI event order) on POST /v1/ag-ui.
//
// usage: node check.mjs http://127.0.0.1:PORT   (exits non-zero on any failure)
import { DefaultChatTransport, readUIMessageStream } from 'ai';
import { HttpAgent } from '@ag-ui/client';

const base = process.argv[2];
if (!base) {
  console.error('usage: node check.mjs BASE_URL');
  process.exit(2);
}
const PROMPT = 'What is 12 * (3 + 4)?';
const ANSWER = '84';
// The demo model streams its words ~30 ms apart: they must arrive in several separate
// reads, not as one burst at the end.
const MIN_ARRIVALS = 4;
const GAP_MS = 5;
const TIMEOUT_MS = 20000;

function fail(what, detail) {
  throw new Error(`${what}: ${detail}`);
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Separate arrivals: events more than GAP_MS after the previous one. */
function arrivals(times) {
  let count = 0;
  for (let i = 0; i < times.length; i++) {
    if (i === 0 || times[i] - times[i - 1] >= GAP_MS) count++;
  }
  return count;
}

function checkArrivals(what, times) {
  for (let i = 1; i < times.length; i++) {
    if (times[i] < times[i - 1]) fail(what, 'arrival timestamps went backwards');
  }
  const n = arrivals(times);
  const span = times.length ? (times[times.length - 1] - times[0]).toFixed(0) : 0;
  if (n < MIN_ARRIVALS) {
    fail(what, `${times.length} deltas arrived in ${n} separate burst(s) over ${span} ms; at least ${MIN_ARRIVALS} required (the stream is buffered)`);
  }
  return `${times.length} deltas in ${n} arrivals over ${span} ms`;
}

async function aiSdk() {
  const what = 'AI SDK /v1/ai-sdk/chat';
  // Check the protocol header with a plain request first.
  const probe = await fetch(`${base}/v1/ai-sdk/chat`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ id: 'probe', messages: [{ id: 'u0', role: 'user', parts: [{ type: 'text', text: 'hi' }] }], trigger: 'submit-message' }),
  });
  if (probe.headers.get('x-vercel-ai-ui-message-stream') !== 'v1') {
    fail(what, `header x-vercel-ai-ui-message-stream is ${probe.headers.get('x-vercel-ai-ui-message-stream')}`);
  }
  await probe.text();

  const transport = new DefaultChatTransport({ api: `${base}/v1/ai-sdk/chat` });
  const messages = [{ id: 'u1', role: 'user', parts: [{ type: 'text', text: PROMPT }] }];
  const chunks = await withTimeout(
    transport.sendMessages({
      chatId: 'chat-e2e',
      messages,
      trigger: 'submit-message',
      messageId: undefined,
      abortSignal: new AbortController().signal,
    }),
    what,
  );
  const times = [];
  const types = [];
  const timed = chunks.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        types.push(chunk.type);
        if (chunk.type === 'text-delta') times.push(performance.now());
        controller.enqueue(chunk);
      },
    }),
  );
  let last;
  const errors = [];
  const read = (async () => {
    for await (const message of readUIMessageStream({ stream: timed, onError: (e) => errors.push(e), terminateOnError: true })) {
      last = message;
    }
  })();
  await withTimeout(read, what);
  if (errors.length) fail(what, `stream errors: ${errors.map(String).join('; ')}`);
  if (!last) fail(what, 'no message was reconstructed');
  if (last.role !== 'assistant') fail(what, `role ${last.role}`);
  const text = last.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');
  const tools = last.parts.filter((p) => p.type === 'tool-calculator');
  if (tools.length !== 1) fail(what, `expected one tool-calculator part, got ${JSON.stringify(last.parts)}`);
  const tool = tools[0];
  if (tool.state !== 'output-available') fail(what, `tool part state ${tool.state}`);
  if (!tool.input || typeof tool.input.expression !== 'string') fail(what, `tool input ${JSON.stringify(tool.input)}`);
  if (String(tool.output) !== ANSWER && !JSON.stringify(tool.output).includes(ANSWER)) {
    fail(what, `tool output ${JSON.stringify(tool.output)}`);
  }
  if (!text.includes(ANSWER)) fail(what, `text ${JSON.stringify(text)} lacks ${ANSWER}`);
  const steps = last.parts.filter((p) => p.type === 'step-start').length;
  if (steps !== 2) fail(what, `expected 2 step-start parts, got ${steps}`);
  for (const needed of ['start', 'tool-input-start', 'tool-input-delta', 'tool-input-available', 'tool-output-available', 'finish']) {
    if (!types.includes(needed)) fail(what, `no ${needed} chunk in ${types.join(',')}`);
  }
  return `${what}: ok (text ${JSON.stringify(text)}, tool ${tool.input.expression} = ${JSON.stringify(tool.output)}; ${checkArrivals(what, times)})`;
}

async function agUi() {
  const what = 'AG-UI /v1/ag-ui';
  const agent = new HttpAgent({
    url: `${base}/v1/ag-ui`,
    threadId: 'thread-e2e',
    initialMessages: [{ id: 'u1', role: 'user', content: PROMPT }],
  });
  const times = [];
  const types = [];
  let runError;
  let failed;
  const result = await withTimeout(
    agent.runAgent(
      { runId: 'run-e2e' },
      {
        onEvent({ event }) {
          types.push(event.type);
          if (event.type === 'TEXT_MESSAGE_CONTENT') times.push(performance.now());
        },
        onRunErrorEvent({ event }) {
          runError = event;
        },
        onRunFailed({ error }) {
          failed = error;
        },
      },
    ),
    what,
  );
  if (failed) fail(what, `run failed: ${failed}`);
  if (runError) fail(what, `RUN_ERROR ${JSON.stringify(runError)}`);
  if (types[0] !== 'RUN_STARTED' || types[types.length - 1] !== 'RUN_FINISHED') {
    fail(what, `event order ${types.join(',')}`);
  }
  for (const needed of ['TOOL_CALL_START', 'TOOL_CALL_ARGS', 'TOOL_CALL_END', 'TOOL_CALL_RESULT', 'TEXT_MESSAGE_END']) {
    if (!types.includes(needed)) fail(what, `no ${needed} in ${types.join(',')}`);
  }
  const messages = agent.messages;
  const call = messages.flatMap((m) => m.toolCalls ?? []).find((c) => c.function.name === 'calculator');
  if (!call) fail(what, `no calculator tool call in ${JSON.stringify(messages)}`);
  JSON.parse(call.function.arguments);
  const toolMessage = messages.find((m) => m.role === 'tool' && m.toolCallId === call.id);
  if (!toolMessage || !String(toolMessage.content).includes(ANSWER)) fail(what, `tool message ${JSON.stringify(toolMessage)}`);
  const text = messages.filter((m) => m.role === 'assistant').map((m) => m.content ?? '').join('');
  if (!text.includes(ANSWER)) fail(what, `assistant text ${JSON.stringify(text)} lacks ${ANSWER}`);
  if (!result || !Array.isArray(result.newMessages) || result.newMessages.length < 3) {
    fail(what, `newMessages ${JSON.stringify(result?.newMessages)}`);
  }
  return `${what}: ok (${types.length} events, tool ${call.function.arguments} -> ${toolMessage.content}; ${checkArrivals(what, times)})`;
}

let status = 0;
for (const check of [aiSdk, agUi]) {
  try {
    console.log(await check());
  } catch (error) {
    console.error(`FAIL ${error.stack ?? error}`);
    status = 1;
  }
}
process.exit(status);
