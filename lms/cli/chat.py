"""lms chat: a terminal chat with a model, one-shot (-p) or interactive."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from lms.cli.output import fail, info

DEFAULT_SYSTEM_PROMPT = ("You are an AI assistant running in the user's terminal. "
                         "Provide helpful and concise responses.")
HELP = """Commands:
  /help                  show this help
  /exit                  leave the chat (Ctrl+D works too)
  /clear                 forget the conversation
  /system-prompt <text>  replace the system prompt and forget the conversation
  /stats                 show the statistics of the last answer"""


class Session:
    def __init__(self, client, model: str, system_prompt: str, ttl: int):
        self.client, self.model, self.ttl = client, model, ttl
        self.system_prompt = system_prompt
        self.messages: list[dict] = []
        self.last_stats: dict | None = None

    def ask(self, text: str) -> str:
        """Stream one answer to stdout; Ctrl+C ends the answer early and keeps what was said."""
        self.messages.append({"role": "user", "content": text})
        body = {"model": self.model, "ttl": self.ttl, "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "system", "content": self.system_prompt}, *self.messages]}
        parts: list[str] = []
        started, first, usage, finish = time.perf_counter(), None, None, None
        try:
            for chunk in self.client.stream_events("/v1/chat/completions", body):
                for choice in chunk.get("choices", []):
                    piece = choice["delta"].get("content")
                    if piece:
                        first = first or time.perf_counter()
                        parts.append(piece)
                        sys.stdout.write(piece)
                        sys.stdout.flush()
                    finish = choice.get("finish_reason") or finish
                usage = chunk.get("usage") or usage
        except KeyboardInterrupt:
            finish = "userStopped"
            info("\nGeneration interrupted by user with Ctrl^C")
        sys.stdout.write("\n")
        answer = "".join(parts)
        self.messages.append({"role": "assistant", "content": answer})
        ended = time.perf_counter()
        predicted = (usage or {}).get("completion_tokens", len(parts))
        decode = ended - (first or ended)
        self.last_stats = {
            "Stop Reason": {"stop": "eosFound", "length": "maxPredictedTokensReached"}.get(finish, finish),
            "Tokens/Second": f"{(predicted / decode):.2f}" if decode > 0 else "n/a",
            "Time to First Token": f"{((first or ended) - started):.3f}s",
            "Prompt Tokens": (usage or {}).get("prompt_tokens", "n/a"),
            "Predicted Tokens": predicted,
            "Total Tokens": (usage or {}).get("total_tokens", "n/a"),
        }
        return answer

    def print_stats(self) -> None:
        if not self.last_stats:
            info("No statistics yet.")
            return
        info("\nPrediction Stats:")
        for key, value in self.last_stats.items():
            info(f"  {key}: {value}")


def chat(
    model: Annotated[str | None, typer.Argument(help="The model to chat with (default: a loaded model).")] = None,
    prompt: Annotated[str | None, typer.Option("-p", "--prompt", help="Print the answer to this and exit.")] = None,
    system_prompt: Annotated[str, typer.Option("-s", "--system-prompt", help="The system prompt.")]
    = DEFAULT_SYSTEM_PROMPT,
    stats: Annotated[bool, typer.Option("--stats", help="Show prediction statistics after each answer.")] = False,
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="Idle seconds before a model loaded for this chat unloads.")]
    = 3600,
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
    piped = "" if sys.stdin.isatty() else sys.stdin.read()
    session = Session(client, model, system_prompt, ttl)
    if prompt is not None or piped:
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
            session.messages.clear()
            info("Conversation cleared.")
        elif command == "/system-prompt":
            session.system_prompt, session.messages = argument or DEFAULT_SYSTEM_PROMPT, []
            info("System prompt updated.")
        elif command == "/stats":
            session.print_stats()
        elif command.startswith("/"):
            info(f"Unknown command {command}. Type /help for the list.")
        else:
            session.ask(line)
            if stats:
                session.print_stats()


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
