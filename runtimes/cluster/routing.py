"""Prefix affinity for cluster models: the requests of one conversation go to the replica that already holds its
prompt prefix in its KV cache, so a follow-up reports `cached_tokens` and starts fast, as on a local model.

A request's affinity key is its conversation's opening (the system prompt and the first user turn, or the start of
a raw prompt): every later turn repeats it. Replicas are ranked for a key by rendezvous hashing, so a key keeps its
replica while replicas come and go, and the ranking is Serve's fallback order: when the preferred replica is full
(its `max_ongoing_requests`), the next one takes the request."""

from __future__ import annotations

import hashlib
import json

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

PROMPT_KEY_CHARS = 512


def affinity_key(request: object) -> str | None:
    """The opening of the conversation a generate request continues; None for anything else."""
    if not isinstance(request, dict):
        return None
    messages = request.get("messages")
    if isinstance(messages, list) and messages:
        opening = []
        for message in messages:
            opening.append(message)
            if isinstance(message, dict) and message.get("role") == "user":
                break
        return json.dumps(opening, sort_keys=True, default=str)
    prompt = request.get("prompt")
    return prompt[:PROMPT_KEY_CHARS] if isinstance(prompt, str) and prompt else None


def rank(key: str, replicas: list) -> list:
    """Replicas in rendezvous-hash order for the key: the first is the key's home."""
    def weight(replica) -> bytes:
        return hashlib.sha256(f"{key}\0{replica.replica_id.unique_id}".encode()).digest()

    return sorted(replicas, key=weight, reverse=True)


class PrefixAffinityRouter(RequestRouter):
    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        key = affinity_key(pending_request.args[0]) if pending_request and pending_request.args else None
        if key is None:  # control calls (count, tokenize, ...): the least busy of all
            return [candidate_replicas]
        return [[replica] for replica in rank(key, candidate_replicas)]
