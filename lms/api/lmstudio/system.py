"""The `system` namespace: the server's version, the downloaded models, and notifications (shown nowhere,
acknowledged so the caller does not wait)."""

from __future__ import annotations

from lms import __version__
from lms.api.lmstudio.frames import VOID
from lms.api.lmstudio.models import manager_of, model_info
from lms.api.lmstudio.session import Namespace, Session

DOMAINS = ("llm", "embedding")  # the SDKs refuse any other model type


async def version(_session: Session, _parameter) -> dict:
    return {"version": __version__, "build": 0}


async def list_downloaded_models(session: Session, _parameter) -> list[dict]:
    return [model_info(entry) for entry in manager_of(session).entries()
            if entry.type in DOMAINS and entry.selected_variant in (None, entry.variant_key)]


async def notify(_session: Session, _parameter) -> object:
    return VOID


def namespace() -> Namespace:
    return Namespace("system", rpcs={"version": version, "listDownloadedModels": list_downloaded_models,
                                     "notify": notify})
