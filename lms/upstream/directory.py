"""What the daemon knows of its upstreams: the registry (re-read when upstreams.json changes), one HTTP client
each, and their model lists, fetched with a deadline and kept, so listing models never waits on a slow upstream.
An upstream model is a ModelEntry of format "upstream", keyed NAME/<model>."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from lms.errors import LmsError
from lms.store.catalog import ModelEntry
from lms.upstream import registry
from lms.upstream.client import UpstreamClient
from lms.upstream.engine import UpstreamWorker
from lms.upstream.registry import Upstream

log = logging.getLogger("lms.upstream")
REFRESH_SECONDS = 30.0


def entry_of(upstream: Upstream, model: dict) -> ModelEntry:
    key = f"{upstream.name}/{model['id']}"
    return ModelEntry(model_key=key, variant_key=key, path=Path("/upstream") / upstream.name / model["id"],
                      rel_path=key, publisher=upstream.name, display_name=model["id"], size_bytes=0,
                      type=model["type"], architecture="upstream", params_string=None, quantization=None,
                      max_context_length=model["context_length"], vision=model["vision"],
                      trained_for_tool_use=model["type"] == "llm", format="upstream")


class UpstreamDirectory:
    def __init__(self) -> None:
        self._upstreams: dict[str, Upstream] = {}
        self._seen: float | None = -1.0  # upstreams.json's mtime when last read
        self._clients: dict[str, UpstreamClient] = {}
        self._models: dict[str, list[ModelEntry]] = {}
        self._errors: dict[str, str] = {}
        self._keys: dict[str, str] = {}  # API keys handed over by `lms upstream add` for this daemon's life
        self._closing: set[asyncio.Task] = set()

    # --- the registry ---------------------------------------------------------------------------------------

    def upstreams(self) -> dict[str, Upstream]:
        mtime = registry.mtime()
        if mtime != self._seen:
            try:
                found = registry.load()
            except LmsError as exc:
                log.error("%s", exc.message)
                found = {}
            for name in set(self._upstreams) - set(found):
                self._forget(name)
            for name, upstream in found.items():
                if self._upstreams.get(name) != upstream:
                    self._forget(name)
            self._upstreams, self._seen = found, mtime
        return self._upstreams

    def _forget(self, name: str) -> None:
        self._models.pop(name, None)
        self._errors.pop(name, None)
        client = self._clients.pop(name, None)
        if client is not None:
            task = asyncio.get_running_loop().create_task(client.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def remember_key(self, name: str, key: str | None) -> None:
        if key:
            self._keys[name] = key
        else:
            self._keys.pop(name, None)

    def key_of(self, upstream: Upstream) -> str | None:
        """The API key: as `lms upstream add` handed it over, else from the daemon's own environment."""
        return self._keys.get(upstream.name) or (os.environ.get(upstream.api_key_env) if upstream.api_key_env
                                                 else None)

    def client(self, upstream: Upstream) -> UpstreamClient:
        client = self._clients.get(upstream.name)
        if client is None:
            client = self._clients[upstream.name] = UpstreamClient(upstream, self.key_of(upstream))
        return client

    async def check(self, upstream: Upstream, key: str | None) -> list[dict]:
        """The models of an upstream not registered yet (or registered differently): the URL and key are tried."""
        client = UpstreamClient(upstream, key or self.key_of(upstream))
        try:
            return await client.models()
        finally:
            await client.close()

    def owner(self, name: str) -> Upstream | None:
        """The upstream a model name belongs to: the part before its first '/' names it."""
        prefix = name.partition("/")[0]
        return self.upstreams().get(prefix) if "/" in name else None

    # --- model lists ------------------------------------------------------------------------------------------

    async def refresh(self, upstream: Upstream) -> list[ModelEntry]:
        """Fetch the upstream's models now; a failure is kept (for `lms upstream ls`) and raised."""
        try:
            models = await self.client(upstream).models()
        except LmsError as exc:
            self._errors[upstream.name] = exc.message
            raise
        self._errors.pop(upstream.name, None)
        self._models[upstream.name] = [entry_of(upstream, model) for model in models]
        return self._models[upstream.name]

    async def refresh_all(self) -> None:
        upstreams = list(self.upstreams().values())
        results = await asyncio.gather(*(self.refresh(u) for u in upstreams), return_exceptions=True)
        for upstream, result in zip(upstreams, results, strict=True):
            if isinstance(result, LmsError):
                log.warning("upstream %s: %s", upstream.name, result.message)

    async def keep_fresh(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.refresh_all()
            await asyncio.sleep(REFRESH_SECONDS)

    def entries(self) -> list[ModelEntry]:
        """Every upstream model as last listed (without waiting for any upstream)."""
        registered = self.upstreams()
        return [entry for name, entries in self._models.items() if name in registered for entry in entries]

    def cached(self, name: str) -> ModelEntry | None:
        wanted = name.lower()
        return next((entry for entry in self.entries() if entry.model_key.lower() == wanted), None)

    async def find(self, name: str) -> ModelEntry | None:
        """The upstream model a name asks for, listing its upstream again if it is not known yet; None when the
        name names no upstream, an error when it names one that does not have it or cannot be reached."""
        upstream = self.owner(name)
        if upstream is None:
            return None
        if entry := self.cached(name):
            return entry
        await self.refresh(upstream)
        if entry := self.cached(name):
            return entry
        available = ", ".join(e.model_key for e in self._models.get(upstream.name, [])) or "none"
        raise LmsError.not_found(f"Upstream '{upstream.name}' has no model '{name.partition('/')[2]}'. Its models: "
                                 f"{available}.", "model", code="model_not_found")

    def worker(self, entry: ModelEntry) -> UpstreamWorker:
        upstream = self.upstreams()[entry.publisher]
        return UpstreamWorker(self.client(upstream), entry.display_name)

    def status(self) -> list[dict]:
        return [{**upstream.public(), "reachable": name not in self._errors, "error": self._errors.get(name),
                 "models": [entry.model_key for entry in self._models.get(name, [])]}
                for name, upstream in sorted(self.upstreams().items())]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
