"""lms chat: a terminal chat with a model, one-shot (-p) or interactive."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from lms import config
from lms.cli.output import fail, info

DEFAULT_SYSTEM_PROMPT = ("You are an AI assistant running in the user's terminal. "
                         "Provide helpful and concise responses.")
HELP = """Commands:
  /help                  show this help
  /exit                  leave the chat (Ctrl+D works too)
  /clear                 forget the conversation
  /system-prompt <text>  replace the system prompt and forget the conversation
  /stats                 show the statistics of the last answer
  /reasoning auto|on|off think before answering (models that can), as --reasoning"""

# --reasoning: auto leaves it to the model's template; off asks for no thinking; on asks for it (medium effort
# where the model takes an effort).
REASONING_EFFORTS = {"auto": None, "on": "medium", "off": "none"}


class ThinkingPrinter:
    """Reasoning as LM Studio's chat shows it: between <think> and </think> lines, before the answer."""

    def __init__(self) -> None:
        self.open = False

    def feed(self, text: str | None) -> None:
        if not text:
            return
        if not self.open:
            sys.stdout.write("<think>\n")
            self.open = True
        sys.stdout.write(text)
        sys.stdout.flush()

    def close(self) -> None:
        if self.open:
            sys.stdout.write("\n</think>\n")
            self.open = False


class Session:
    def __init__(self, client, model: str, system_prompt: str | None, ttl: int, mcp: list[str] | None = None,
                 confirm_tools: bool = False, preset: str | None = None, reasoning: str = "auto"):
        self.client, self.model, self.ttl, self.preset = client, model, ttl, preset
        self.reasoning = reasoning
        self.system_prompt = system_prompt  # None: the preset's (or none)
        self.messages: list[dict] = []
        self.last_stats: dict | None = None
        # With MCP servers the chat runs on /v1/responses, which runs their tools; the daemon keeps the history.
        self.mcp_tools = [{"type": "mcp", "server_label": name, "require_approval": "always" if confirm_tools
                           else "never"} for name in mcp or []]
        self.previous_id: str | None = None

    def clear(self) -> None:
        self.messages, self.previous_id = [], None

    def ask(self, text: str) -> str:
        """Stream one answer to stdout; Ctrl+C ends the answer early and keeps what was said."""
        if self.mcp_tools:
            return self._ask_with_tools(text)
        self.messages.append({"role": "user", "content": text})
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        effort = REASONING_EFFORTS[self.reasoning]
        body = {"model": self.model, "ttl": self.ttl, "stream": True, "stream_options": {"include_usage": True},
                "messages": [*system, *self.messages], **({"preset": self.preset} if self.preset else {}),
                **({"reasoning_effort": effort} if effort else {})}
        parts: list[str] = []
        thinking = ThinkingPrinter()
        started, first, usage, finish = time.perf_counter(), None, None, None
        try:
            for chunk in self.client.stream_events("/v1/chat/completions", body):
                for choice in chunk.get("choices", []):
                    delta = choice["delta"]
                    thinking.feed(delta.get("reasoning_content") or delta.get("reasoning"))
                    piece = delta.get("content")
                    if piece:
                        thinking.close()
                        first = first or time.perf_counter()
                        parts.append(piece)
                        sys.stdout.write(piece)
                        sys.stdout.flush()
                    finish = choice.get("finish_reason") or finish
                usage = chunk.get("usage") or usage
        except KeyboardInterrupt:
            finish = "userStopped"
            info("\nGeneration interrupted by user with Ctrl^C")
        thinking.close()
        sys.stdout.write("\n")
        answer = "".join(parts)
        self.messages.append({"role": "assistant", "content": answer})
        self._remember_stats(started, first, usage or {}, finish, len(parts))
        return answer

    def _remember_stats(self, started: float, first: float | None, usage: dict, finish: str | None, pieces: int):
        ended = time.perf_counter()
        predicted = usage.get("completion_tokens", usage.get("output_tokens", pieces))
        prompt = usage.get("prompt_tokens", usage.get("input_tokens", "n/a"))
        decode = ended - (first or ended)
        self.last_stats = {
            "Stop Reason": {"stop": "eosFound", "length": "maxPredictedTokensReached"}.get(finish, finish),
            "Tokens/Second": f"{(predicted / decode):.2f}" if decode > 0 else "n/a",
            "Time to First Token": f"{((first or ended) - started):.3f}s",
            "Prompt Tokens": prompt,
            "Predicted Tokens": predicted,
            "Total Tokens": usage.get("total_tokens", "n/a"),
        }

    def _ask_with_tools(self, text: str) -> str:
        """One turn on /v1/responses: tool calls are shown as they run; approvals are asked for when wanted."""
        turn_input: list[dict] | str = text
        parts: list[str] = []
        started, first, usage, finish = time.perf_counter(), None, {}, None
        try:
            while True:
                effort = REASONING_EFFORTS[self.reasoning]
                body = {"model": self.model, "ttl": self.ttl, "stream": True, "instructions": self.system_prompt,
                        "input": turn_input, "tools": self.mcp_tools, "previous_response_id": self.previous_id,
                        **({"preset": self.preset} if self.preset else {}),
                        **({"reasoning": {"effort": effort}} if effort else {})}
                requests = []
                thinking = ThinkingPrinter()
                for event in self.client.stream_events("/v1/responses", body):
                    kind = event["type"]
                    if kind == "response.reasoning_text.delta":
                        thinking.feed(event["delta"])
                    elif kind == "response.output_text.delta":
                        thinking.close()
                        first = first or time.perf_counter()
                        parts.append(event["delta"])
                        sys.stdout.write(event["delta"])
                        sys.stdout.flush()
                    elif kind == "response.output_item.done" and event["item"]["type"] == "mcp_call":
                        _show_call(event["item"])
                    elif kind == "response.output_item.done" and event["item"]["type"] == "mcp_approval_request":
                        requests.append(event["item"])
                    elif kind in ("response.completed", "response.incomplete", "response.failed"):
                        response = event["response"]
                        self.previous_id = response["id"]
                        usage = response.get("usage") or usage
                        finish = "length" if kind == "response.incomplete" else "stop"
                thinking.close()
                if not requests:
                    break
                turn_input = [{"type": "mcp_approval_response", "approval_request_id": r["id"],
                               "approve": _confirm(r)} for r in requests]
        except KeyboardInterrupt:
            finish = "userStopped"
            info("\nGeneration interrupted by user with Ctrl^C")
        sys.stdout.write("\n")
        self._remember_stats(started, first, usage, finish, len(parts))
        return "".join(parts)

    def print_stats(self) -> None:
        if not self.last_stats:
            info("No statistics yet.")
            return
        info("\nPrediction Stats:")
        for key, value in self.last_stats.items():
            info(f"  {key}: {value}")


def _show_call(item: dict) -> None:
    result = item["output"] if item.get("output") is not None else f"error: {(item.get('error') or {}).get('message')}"
    info(f"\n[{item['server_label']}] {item['name']}({item['arguments']}) -> {result}")


def _confirm(request: dict) -> bool:
    info(f"\n[{request['server_label']}] wants to run {request['name']}({request['arguments']})")
    try:
        return input("Allow this tool call? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def chat(
    model: Annotated[str | None, typer.Argument(help="The model to chat with (default: a loaded model).")] = None,
    prompt: Annotated[str | None, typer.Option("-p", "--prompt", help="Print the answer to this and exit.")] = None,
    system_prompt: Annotated[str | None, typer.Option("-s", "--system-prompt", help="The system prompt.")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Apply this preset from LMS_HOME/config-presets "
                                                                "(system prompt, sampling, structured output).")]
    = None,
    stats: Annotated[bool, typer.Option("--stats", help="Show prediction statistics after each answer.")] = False,
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="Idle seconds before a model loaded for this chat unloads.")]
    = 3600,
    mcp: Annotated[list[str] | None, typer.Option(
        "--mcp", help="Give the model the tools of this MCP server from LMS_HOME/mcp.json (repeatable). "
                      "An interactive chat asks before each tool call.")] = None,
    reasoning: Annotated[str, typer.Option("--reasoning", help="auto: as the model's template does; on: think "
                                                               "before answering; off: answer without thinking "
                                                               "(models that think). Reasoning is shown between "
                                                               "<think> lines.")] = "auto",
):
    """Chat with a model in the terminal. Piped standard input is read as (part of) the prompt."""
    from lms.client import DaemonError, ensure_daemon

    client = ensure_daemon()
    if model is None:
        loaded = client.get("/lms/ps")
        llms = [m for m in loaded if m["type"] == "llm"]
        if not llms:
            fail("No loaded model found, load with: lms load")
        model = llms[0]["identifier"]
    else:
        known = {m["identifier"] for m in client.get("/lms/ps")}
        if model not in known:
            try:
                model = client.post("/lms/resolve", {"model": model})["modelKey"]
            except DaemonError:
                fail(f'Model "{model}" not found, load with: lms load {model}')
    if mcp:
        from lms.mcp.config import McpConfigError, local_servers

        try:
            servers = local_servers()
        except McpConfigError as exc:
            fail(str(exc))
        unknown = [name for name in mcp if name not in servers]
        if unknown:
            fail(f"No MCP server {', '.join(unknown)} in {config.home() / 'mcp.json'} "
                 f"(it has: {', '.join(sorted(servers)) or 'none'}).")
    if reasoning not in REASONING_EFFORTS:
        fail(f"--reasoning must be auto, on or off, not {reasoning!r}.")
    piped = "" if sys.stdin.isatty() else sys.stdin.read()
    one_shot = prompt is not None or bool(piped)
    if preset:
        from lms.errors import LmsError
        from lms.presets import load as load_preset

        try:
            load_preset(preset)
        except LmsError as exc:
            fail(exc.message)
    if system_prompt is None and not preset:
        system_prompt = DEFAULT_SYSTEM_PROMPT
    session = Session(client, model, system_prompt, ttl, mcp=mcp, confirm_tools=not one_shot, preset=preset,
                      reasoning=reasoning)
    if one_shot:
        text = f"{prompt}\n\n{piped}" if prompt and piped else (prompt or piped)
        session.ask(text.strip())
        if stats:
            session.print_stats()
        return
    info(f"Chatting with {model}. Type /help for commands, /exit or Ctrl+D to leave.")
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            info("")
            return
        command, _, argument = line.strip().partition(" ")
        if not line.strip():
            continue
        if command == "/exit":
            return
        if command == "/help":
            info(HELP)
        elif command == "/clear":
            session.clear()
            info("Conversation cleared.")
        elif command == "/system-prompt":
            session.system_prompt = argument or DEFAULT_SYSTEM_PROMPT
            session.clear()
            info("System prompt updated.")
        elif command == "/stats":
            session.print_stats()
        elif command == "/reasoning":
            if argument not in REASONING_EFFORTS:
                info("Usage: /reasoning auto|on|off")
            else:
                session.reasoning = argument
                info(f"Reasoning: {argument}.")
        elif command.startswith("/"):
            info(f"Unknown command {command}. Type /help for the list.")
        else:
            session.ask(line)
            if stats:
                session.print_stats()


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
