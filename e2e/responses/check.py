"""The official `openai` Python SDK against `agent serve`'s POST /v1/responses.

Usage: check.py AGENT_BINARY RUNTIME [RUNTIME ...]

For each runtime it starts `AGENT serve --runtime R --addr 127.0.0.1:0` (the built-in demo
model, which answers arithmetic with a calculator tool), then:

* `client.responses.create(...)`: the non-streamed response object;
* `client.responses.create(..., stream=True)`: every event is a typed SDK event that also
  passes strict pydantic validation, `sequence_number` counts 0, 1, 2, …, the text rebuilt
  from `response.output_text.delta` equals the completed response's text, and the deltas
  arrived in several separate arrivals (timestamps), not in one burst at the end;
* `client.responses.stream(...)`: the SDK's own accumulator gets the same final text.

Exits non-zero on the first failure. Every wait is bounded.
"""

import subprocess
import sys
import threading
import time

import openai
import pydantic
from openai.types.responses import Response, ResponseStreamEvent

QUESTION = "What is 12 * (3 + 4)?"
STARTUP_TIMEOUT = 60.0
# Deltas closer together than this count as one burst.
BURST_GAP = 0.005
MIN_ARRIVALS = 3

EVENT_ADAPTER = pydantic.TypeAdapter(ResponseStreamEvent)


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def start_server(binary, runtime):
    proc = subprocess.Popen(
        [binary, "serve", "--runtime", runtime, "--addr", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found = {}
    lines = []

    def read_stderr():
        for line in proc.stderr:
            lines.append(line.rstrip())
            if "serving on http://" in line and "addr" not in found:
                found["addr"] = line.split("serving on http://", 1)[1].split()[0]
                ready.set()
        ready.set()

    ready = threading.Event()
    threading.Thread(target=read_stderr, daemon=True).start()
    ready.wait(STARTUP_TIMEOUT)
    if "addr" not in found:
        proc.kill()
        raise Failure(f"{runtime}: the server did not print its address; stderr: {lines}")
    return proc, found["addr"]


def check_non_streamed(client, runtime):
    response = client.responses.create(model="demo", input=QUESTION)
    Response.model_validate(response.to_dict())  # strict: every required field present
    check(response.object == "response", f"{runtime}: object is {response.object!r}")
    check(response.status == "completed", f"{runtime}: status is {response.status!r}")
    check(response.id.startswith("resp_"), f"{runtime}: id is {response.id!r}")
    kinds = [item.type for item in response.output]
    check(
        kinds == ["message", "function_call", "function_call_output", "message"],
        f"{runtime}: non-streamed output items are {kinds}",
    )
    check("84" in response.output_text, f"{runtime}: output_text is {response.output_text!r}")
    check(
        response.usage is not None and response.usage.total_tokens > 0,
        f"{runtime}: usage is {response.usage!r}",
    )
    return response.output_text


def check_streamed(client, runtime):
    events = []
    with client.responses.create(model="demo", input=QUESTION, stream=True) as stream:
        for event in stream:
            events.append((time.monotonic(), event))
    check(events, f"{runtime}: no events")
    types = [event.type for _, event in events]
    for index, (_, event) in enumerate(events):
        check(
            isinstance(event, pydantic.BaseModel),
            f"{runtime}: event {index} was not parsed into an SDK type: {event!r}",
        )
        # The SDK builds events leniently; strict validation proves every field is there.
        EVENT_ADAPTER.validate_python(event.to_dict())
        check(
            event.sequence_number == index,
            f"{runtime}: event {index} ({event.type}) has sequence_number {event.sequence_number}",
        )
    check(types[:2] == ["response.created", "response.in_progress"], f"{runtime}: starts {types[:2]}")
    check(types[-1] == "response.completed", f"{runtime}: ends with {types[-1]}")
    for required in [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
    ]:
        check(required in types, f"{runtime}: no {required} event in {sorted(set(types))}")
    deltas = [(t, e) for t, e in events if e.type == "response.output_text.delta"]
    text = "".join(e.delta for _, e in deltas)
    final = events[-1][1].response
    check(text == final.output_text, f"{runtime}: deltas {text!r} != final {final.output_text!r}")
    check("84" in text, f"{runtime}: streamed text is {text!r}")
    arrivals = 1
    for (before, _), (after, _) in zip(deltas, deltas[1:]):
        if after - before >= BURST_GAP:
            arrivals += 1
    span = deltas[-1][0] - deltas[0][0]
    check(
        arrivals >= MIN_ARRIVALS,
        f"{runtime}: {len(deltas)} text deltas arrived in {arrivals} separate arrival(s) over "
        f"{span * 1000:.0f} ms; at least {MIN_ARRIVALS} required (the stream was buffered)",
    )
    return text, len(deltas), arrivals, span, len(set(types))


def check_stream_helper(client, runtime):
    with client.responses.stream(model="demo", input=QUESTION) as stream:
        pieces = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    check("".join(pieces) == final.output_text, f"{runtime}: stream() text mismatch")
    check(final.status == "completed", f"{runtime}: stream() final status {final.status!r}")
    return final.output_text


def run(binary, runtime):
    proc, addr = start_server(binary, runtime)
    try:
        client = openai.OpenAI(
            base_url=f"http://{addr}/v1", api_key="unused", max_retries=0, timeout=30.0
        )
        full = check_non_streamed(client, runtime)
        text, deltas, arrivals, span, kinds = check_streamed(client, runtime)
        helper = check_stream_helper(client, runtime)
        check(full == text == helper, f"{runtime}: texts differ: {full!r} {text!r} {helper!r}")
        print(
            f"ok {runtime}: {text!r}; {deltas} deltas in {arrivals} arrivals over "
            f"{span * 1000:.0f} ms; {kinds} event types parsed (openai {openai.__version__})"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    binary, runtimes = sys.argv[1], sys.argv[2:]
    failed = False
    for runtime in runtimes:
        try:
            run(binary, runtime)
        except Exception as err:  # a Failure, an SDK error, a validation error
            failed = True
            print(f"FAIL {runtime}: {type(err).__name__}: {err}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
