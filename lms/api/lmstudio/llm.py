"""The `llm` namespace: model management (lms.api.lmstudio.models) and the `predict` channel, which runs one
chat generation through the pipeline and sends its parsed events as LM Studio's fragments, tool-call events and
the final `success` with stats; a prompt template override (what complete() sends) runs as a raw completion.
A `cancel` from the client stops the generation and still ends in `success`, with the stop reason
`userStopped`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

from lms.api.lmstudio.file_store import client_files
from lms.api.lmstudio.models import instance_info, load_config, management, manager_of, resolve_loaded
from lms.api.lmstudio.prediction import chat_input, completion_input, effective_config
from lms.api.lmstudio.session import Channel, Namespace, Session
from lms.api.lmstudio.tokens import apply_prompt_template, tokenizer_endpoints
from lms.errors import LmsError
from lms.manager.models import prediction_stats


def fragment(text: str, reasoning: bool = False) -> dict:
    """LM Studio's LLMPredictionFragment (every field but `tokens` is required by the SDKs)."""
    return {"type": "fragment", "fragment": {"content": text, "tokensCount": 1, "containsDrafted": False,
                                             "reasoningType": "reasoning" if reasoning else "none",
                                             "isStructural": False}}


def tool_call_messages(event: dict) -> list[dict]:
    """The toolCallGeneration* messages of one parsed tool call."""
    arguments = event.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            arguments = {"input": arguments}
    arguments = arguments if isinstance(arguments, dict) else {}
    call_id = event.get("call_id") or f"call_{uuid.uuid4().hex[:24]}"
    return [{"type": "toolCallGenerationStart", "toolCallId": call_id},
            {"type": "toolCallGenerationNameReceived", "name": event["name"]},
            {"type": "toolCallGenerationArgumentFragmentGenerated", "content": json.dumps(arguments)},
            {"type": "toolCallGenerationEnd", "toolCallRequest": {"type": "function", "id": call_id,
                                                                  "name": event["name"], "arguments": arguments}}]


def prompt_progress(processed: int, total: int, cached: int) -> dict:
    """LM Studio's promptProcessingProgress: the share of the prompt evaluated, the cached part counting as done."""
    return {"type": "promptProcessingProgress", "progress": round(processed / total, 4) if total else 0.0,
            "details": {"cachedTokenCount": cached, "totalPromptTokenCount": total,
                        "processedPromptTokenCount": processed, "unprocessedPromptTokenCount": total - processed}}


def stats_of(done: dict | None, clock: dict) -> dict:
    """LM Studio's stats from the engine's done event; from what this side counted when the client stopped it."""
    if done is not None:
        stats = prediction_stats(done)
    else:
        elapsed = time.perf_counter() - clock["started"]
        first = clock.get("first")
        stats = {"stopReason": "userStopped", "predictedTokensCount": clock["tokens"],
                 "timeToFirstTokenSec": round(first - clock["started"], 4) if first else None,
                 "promptTokensCount": clock.get("prompt"),
                 "tokensPerSecond": round(clock["tokens"] / (elapsed - (first - clock["started"])), 3)
                 if first and elapsed > first - clock["started"] else None}
        if stats["promptTokensCount"] is not None:
            stats["totalTokensCount"] = stats["promptTokensCount"] + clock["tokens"]
    return {key: value for key, value in stats.items() if value is not None}


async def predict(session: Session, channel: Channel, parameter) -> None:
    if not isinstance(parameter, dict):
        raise LmsError.invalid("The predict channel needs a creation parameter.", "creationParameter")
    model = resolve_loaded(manager_of(session), "llm", parameter.get("modelSpecifier"))
    pipeline = session.app_state.pipeline
    clock = {"started": time.perf_counter(), "tokens": 0}
    completion = completion_input(parameter, model.identifier)
    if completion is not None:  # complete(): the engine's raw text events, no chat template, no parsing
        generation = await pipeline.completion(completion)
    else:
        files = client_files(session.app_state).of(session.client_id)
        generation = await pipeline.chat(chat_input(parameter, model.identifier, files), model=model)
    done: list[dict] = []
    await channel.send(prompt_progress(0, 0, 0))

    async def relay() -> None:
        async for event in generation.events:
            kind = event["type"]
            if kind in ("content", "reasoning", "text"):
                if not event["text"]:
                    continue
                clock.setdefault("first", time.perf_counter())
                clock["tokens"] += 1
                await channel.send(fragment(event["text"], reasoning=kind == "reasoning"))
            elif kind == "tool_call":
                for message in tool_call_messages(event):
                    await channel.send(message)
            elif kind == "prompt_progress":
                await channel.send(prompt_progress(event["processed"], event["total"], event["cached"]))
            elif kind == "prompt":
                clock["prompt"] = total = event.get("prompt_tokens") or 0
                await channel.send(prompt_progress(total, total, event.get("cached_tokens") or 0))
            elif kind == "done":
                done.append(event)

    relaying = asyncio.ensure_future(relay())
    stopping = asyncio.ensure_future(channel.cancelled.wait())
    try:
        await asyncio.wait({relaying, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not relaying.done():  # the client stopped it (or went away): the generation is cancelled here
            relaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relaying
    if not relaying.cancelled():
        relaying.result()  # a failure mid-stream is the channel's error
    stats = stats_of(done[0] if done and not relaying.cancelled() else None, clock)
    await channel.send({"type": "success", "stats": stats, "modelInfo": instance_info(model),
                        "loadModelConfig": load_config(model),
                        "predictionConfig": effective_config(generation.request)})


def namespace() -> Namespace:
    llm = tokenizer_endpoints(management("llm"))
    llm.channels["predict"] = predict
    llm.rpcs["applyPromptTemplate"] = apply_prompt_template
    return llm
