"""A real MCP server for the tests, made with the official `mcp` package.

    python tests/mcp_server.py PORT [streamable-http|sse|stdio] [--extra-tool] [--alarm-tool] [--safe]

Serves /mcp (streamable HTTP) or /sse on 127.0.0.1, or stdio (PORT unused). Its tools answer fixed facts the
model has to pass on, and two misbehave on purpose (left out with --safe): `crash` ends the process mid-call
and `stall` never answers in time. `set_alarm` (--alarm-tool) has a schema that refuses hours past 23.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from pydantic import Field

server = MCPServer("lms-test-tools")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def get_weather(location: str) -> str:
    """Get the current weather for a city."""
    return f"The weather in {location}: 21 degrees Celsius and sunny."


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def get_time(city: str) -> str:
    """Get the current local time in a city."""
    return f"It is 10:42 in {city}."


if "--safe" not in sys.argv:

    @server.tool()
    def crash() -> str:
        """Restart the weather station."""
        os._exit(17)

    @server.tool()
    def stall() -> str:
        """Fetch the long-range forecast."""
        time.sleep(600)
        return "too late"


if "--extra-tool" in sys.argv:

    @server.tool()
    def get_tide(harbor: str) -> str:
        """Get the next high tide in a harbor."""
        return f"High tide in {harbor} is at 14:05."


if "--alarm-tool" in sys.argv:

    @server.tool()
    def set_alarm(hour: Annotated[int, Field(ge=0, le=23)]) -> str:
        """Set the alarm clock to ring at an hour of the day."""
        return f"The alarm rings at {hour}:00."


if __name__ == "__main__":
    port = int(sys.argv[1])
    transport = sys.argv[2] if len(sys.argv) > 2 and not sys.argv[2].startswith("--") else "streamable-http"
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run(transport=transport, host="127.0.0.1", port=port)
