"""The streaming side of a turn: output items as they open, grow and close, each step as an Open Responses
event with its sequence number. The writer keeps the turn's output list, which the finished response holds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from lms.conversation.items import function_call_item, message_item, reasoning_item
from lms.conversation.mcp import approval_request_item, mcp_call_item
from lms.generation.ids import new_id


@dataclass
class _OpenItem:
    kind: str  # "message" or "reasoning"
    item_id: str
    index: int
    text: list[str] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)


class EventWriter:
    def __init__(self, wants_logprobs: bool):
        self.wants_logprobs = wants_logprobs
        self.sequence = 0
        self.output: list[dict] = []
        self.current: _OpenItem | None = None  # the message or reasoning item text is going into

    def event(self, kind: str, **fields) -> dict:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    # --- text: reasoning and message items -----------------------------------------------------------------

    def text(self, event: dict) -> Iterator[dict]:
        """A parsed `reasoning` or `content` event: into the open item of its kind, or a new one."""
        wanted = "reasoning" if event["type"] == "reasoning" else "message"
        if self.current is None or self.current.kind != wanted:
            yield from self.close("completed")
            self.current = _OpenItem(wanted, new_id("rs_" if wanted == "reasoning" else "msg_"), len(self.output))
            yield from self._open(self.current)
        yield from self._delta(self.current, event)

    def _item(self, item: _OpenItem, status: str) -> dict:
        text = "".join(item.text)
        if item.kind == "reasoning":
            return reasoning_item(item.item_id, text, status)
        return message_item(item.item_id, text, status, item.logprobs if self.wants_logprobs else None)

    def _part(self, item: _OpenItem, text: str) -> dict:
        if item.kind == "reasoning":
            return {"type": "reasoning_text", "text": text}
        logprobs = item.logprobs if self.wants_logprobs and text else []
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}

    def _open(self, item: _OpenItem) -> Iterator[dict]:
        shell = self._item(item, "in_progress")
        shell["content"] = []
        yield self.event("response.output_item.added", output_index=item.index, item=shell)
        yield self.event("response.content_part.added", item_id=item.item_id, output_index=item.index,
                         content_index=0, part=self._part(item, ""))

    def _delta(self, item: _OpenItem, event: dict) -> Iterator[dict]:
        item.text.append(event["text"])
        where = {"item_id": item.item_id, "output_index": item.index, "content_index": 0}
        if item.kind == "reasoning":
            yield self.event("response.reasoning.delta", delta=event["text"], **where)
            return
        logprobs = event.get("logprobs") or []
        item.logprobs.extend(logprobs)
        if self.wants_logprobs:
            yield self.event("response.output_text.delta", delta=event["text"], logprobs=logprobs, **where)
        elif event["text"]:
            yield self.event("response.output_text.delta", delta=event["text"], **where)

    def close(self, status: str) -> Iterator[dict]:
        """Close the open text item, if any, as completed or incomplete."""
        item, self.current = self.current, None
        if item is None:
            return
        text = "".join(item.text)
        where = {"item_id": item.item_id, "output_index": item.index, "content_index": 0}
        if item.kind == "reasoning":
            yield self.event("response.reasoning.done", text=text, **where)
        elif self.wants_logprobs:
            yield self.event("response.output_text.done", text=text, logprobs=item.logprobs, **where)
        else:
            yield self.event("response.output_text.done", text=text, **where)
        yield self.event("response.content_part.done", part=self._part(item, text), **where)
        done = self._item(item, status)
        self.output.append(done)
        yield self.event("response.output_item.done", output_index=item.index, item=done)

    # --- whole items: calls, listings, approvals -------------------------------------------------------------

    def function_call(self, event: dict) -> Iterator[dict]:
        """A call of one of the client's functions: the client runs it and sends the output next turn."""
        index, item_id = len(self.output), new_id("fc_")
        shell = function_call_item(item_id, event["call_id"], event["name"], "", "in_progress")
        yield self.event("response.output_item.added", output_index=index, item=shell)
        yield self.event("response.function_call_arguments.delta", item_id=item_id, output_index=index,
                         delta=event["arguments"])
        yield self.event("response.function_call_arguments.done", item_id=item_id, output_index=index,
                         arguments=event["arguments"])
        done = function_call_item(item_id, event["call_id"], event["name"], event["arguments"], "completed")
        self.output.append(done)
        yield self.event("response.output_item.done", output_index=index, item=done)

    def listing(self, listing: dict) -> Iterator[dict]:
        index, where = len(self.output), {"item_id": listing["id"]}
        yield self.event("response.output_item.added", output_index=index, item={**listing, "tools": []})
        yield self.event("response.mcp_list_tools.in_progress", output_index=index, **where)
        yield self.event("response.mcp_list_tools.completed", output_index=index, **where)
        self.output.append(listing)
        yield self.event("response.output_item.done", output_index=index, item=listing)

    def approval_request(self, label: str, event: dict) -> Iterator[dict]:
        index, item = len(self.output), approval_request_item(label, event["name"], event["arguments"])
        yield self.event("response.output_item.added", output_index=index, item=item)
        self.output.append(item)
        yield self.event("response.output_item.done", output_index=index, item=item)

    def mcp_call_started(self, label: str, name: str, arguments: str,
                         approval_request_id: str | None) -> tuple[dict, list[dict]]:
        """The call's place (for mcp_call_finished) and its opening events."""
        index, item_id = len(self.output), new_id("mcp_")
        where = {"item_id": item_id, "output_index": index}
        shell = mcp_call_item(item_id, label, name, "", "in_progress", approval_request_id=approval_request_id)
        return where, [self.event("response.output_item.added", output_index=index, item=shell),
                self.event("response.mcp_call.in_progress", **where),
                self.event("response.mcp_call_arguments.delta", delta=arguments, **where),
                self.event("response.mcp_call_arguments.done", arguments=arguments, **where)]

    def mcp_call_finished(self, where: dict, label: str, name: str, arguments: str, approval_request_id: str | None,
                          output: str | None, error: dict | None) -> list[dict]:
        status = "failed" if error else "completed"
        done = mcp_call_item(where["item_id"], label, name, arguments, status, output=output, error=error,
                             approval_request_id=approval_request_id)
        self.output.append(done)
        return [self.event(f"response.mcp_call.{status}", **where),
                self.event("response.output_item.done", output_index=where["output_index"], item=done)]
