"""A tiny MCP server on the official Python SDK (`mcp`, pinned in requirements.txt), for the
real-server tests of test-support/tests/mcp_real_server.rs.

    python server.py stdio        # MCP over stdin/stdout
    python server.py http         # Streamable HTTP, SSE responses
    python server.py http-json    # Streamable HTTP, JSON responses

In the HTTP modes it binds 127.0.0.1 on an ephemeral port and prints `LISTENING <port>`.
"""
import socket
import sys

from mcp.server.fastmcp import FastMCP


def build(json_response: bool) -> FastMCP:
    server = FastMCP("real-mcp-e2e", json_response=json_response, log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    return server


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if mode == "stdio":
        build(json_response=False).run("stdio")
        return
    import anyio
    import uvicorn

    server = build(json_response=(mode == "http-json"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning", lifespan="on")
    anyio.run(uvicorn.Server(config).serve, [sock])


if __name__ == "__main__":
    main()
