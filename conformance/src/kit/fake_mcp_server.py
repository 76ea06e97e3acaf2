#!/usr/bin/env python3
"""A fake MCP server over stdio for the conformance suite (Python standard library only).

Newline-delimited JSON-RPC on stdin/stdout. Tools (two pages of tools/list):
  add {a, b}          -> text "a+b"; before answering it pings the client (a server request)
  structured {a, b}   -> text and structuredContent {"sum": a+b}
  fail {}             -> isError: true
  exit {}             -> writes to stderr and exits (status 3) without answering
  malformed {}        -> writes a line that is not JSON
  huge {bytes}        -> answers with one line of about `bytes` bytes
  hang {}             -> never answers
  received {}         -> text: JSON list of every message received so far (methods, ids)
  pid {}              -> text: the server's process id
FAKE_MCP_VERSION forces the protocolVersion answered to initialize.
"""
import json
import os
import sys

received = []


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def result(msg_id, value):
    send({"jsonrpc": "2.0", "id": msg_id, "result": value})


def text(value):
    return {"content": [{"type": "text", "text": value}]}


TOOLS = [
    {"name": "add", "description": "Add two integers",
     "inputSchema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                     "required": ["a", "b"]}},
    {"name": "structured", "title": "Structured sum",
     "inputSchema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}},
    {"name": "fail", "description": "Always fails", "inputSchema": {"type": "object"}},
    {"name": "exit", "description": "Exits mid-call", "inputSchema": {"type": "object"}},
    {"name": "malformed", "description": "Answers with a line that is not JSON", "inputSchema": {"type": "object"}},
    {"name": "huge", "description": "Answers with one huge line", "inputSchema": {"type": "object"}},
    {"name": "hang", "description": "Never answers", "inputSchema": {"type": "object"}},
    {"name": "received", "description": "What the server received", "inputSchema": {"type": "object"}},
    {"name": "pid", "description": "The server's process id", "inputSchema": {"type": "object"}},
]


def call(msg_id, name, args):
    if name == "add":
        send({"jsonrpc": "2.0", "id": "srv-ping-1", "method": "ping"})
        result(msg_id, text(str(args["a"] + args["b"])))
    elif name == "structured":
        total = args.get("a", 0) + args.get("b", 0)
        result(msg_id, {"content": [{"type": "text", "text": json.dumps({"sum": total})}],
                        "structuredContent": {"sum": total}})
    elif name == "fail":
        result(msg_id, {"content": [{"type": "text", "text": "the tool failed on purpose"}], "isError": True})
    elif name == "exit":
        sys.stderr.write("fake-mcp: exiting mid-call on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    elif name == "malformed":
        sys.stdout.write("this is {not json-rpc\n")
        sys.stdout.flush()
    elif name == "huge":
        result(msg_id, text("x" * int(args.get("bytes", 1 << 20))))
    elif name == "hang":
        pass
    elif name == "received":
        result(msg_id, text(json.dumps(received)))
    elif name == "pid":
        result(msg_id, text(str(os.getpid())))
    else:
        send({"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32602, "message": "unknown tool " + name}})


def main():
    sys.stderr.write("fake-mcp: started\n")
    sys.stderr.flush()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        received.append({k: msg[k] for k in ("id", "method", "params", "result") if k in msg})
        method = msg.get("method")
        msg_id = msg.get("id")
        if method == "initialize":
            version = os.environ.get("FAKE_MCP_VERSION") or msg["params"]["protocolVersion"]
            result(msg_id, {"protocolVersion": version, "capabilities": {"tools": {}},
                            "serverInfo": {"name": "fake-mcp", "version": "1.0"}})
        elif method == "tools/list":
            cursor = (msg.get("params") or {}).get("cursor")
            if cursor is None:
                result(msg_id, {"tools": TOOLS[:2], "nextCursor": "page-2"})
            else:
                result(msg_id, {"tools": TOOLS[2:]})
        elif method == "tools/call":
            params = msg.get("params") or {}
            call(msg_id, params.get("name"), params.get("arguments") or {})
        elif method == "ping":
            result(msg_id, {})
        elif msg_id is not None and method is not None:
            send({"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32601, "message": "method not found"}})


if __name__ == "__main__":
    main()
