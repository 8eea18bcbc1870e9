"""Run by tests/test_lmstudio_sdk16.py with `lmstudio` 1.6.0b1 first on PYTHONPATH (the venv keeps 1.5.0, which has
no API tokens): what LM Studio's SDK sees of a daemon that needs tokens, printed as one JSON object.

    python tests/sdk16_client.py HOST:PORT INFERENCE_TOKEN ADMIN_TOKEN MODEL_KEY HUB_SEARCH_TERM
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

import lmstudio

WRONG_PASSKEY = "x" * 20  # the shape of a token's passkey, so the SDK sends it and the server judges it


def failure(call: Callable[[], object]) -> dict:
    """What the SDK raised (its type and message), or what the call returned when nothing was raised."""
    try:
        return {"returned": repr(call())}
    except Exception as exc:  # noqa: BLE001 - reported to the test, which asserts on it
        return {"error_type": type(exc).__name__, "message": str(exc)}


def downloaded_keys(host: str, token: str | None) -> list[str]:
    with lmstudio.Client(host, token) as client:
        return sorted(model.model_key for model in client.list_downloaded_models())


def load_with(host: str, token: str, model_key: str, identifier: str) -> str:
    with lmstudio.Client(host, token) as client:
        return client.llm.load_new_instance(model_key, identifier, config={"contextLength": 512}).identifier


def respond_with(host: str, token: str, identifier: str) -> str:
    with lmstudio.Client(host, token) as client:
        return client.llm.model(identifier).respond("Hi", config={"maxTokens": 4}).content


def unload_with(host: str, token: str, identifier: str) -> None:
    with lmstudio.Client(host, token) as client:
        client.llm.unload(identifier)


def download_with(host: str, token: str, search_term: str) -> str:
    """The first search result's recommended download option, downloaded."""
    with lmstudio.Client(host, token) as client:
        options = client.repository.search_models(search_term)[0].get_download_options()
        return next(option for option in options if option.info.recommended).download()


def main(host: str, inference: str, admin: str, model_key: str, search_term: str) -> dict:
    os.environ.pop("LMSTUDIO_API_TOKEN", None)  # "no token" must mean none, not the environment's
    wrong = inference.split(":")[0] + ":" + WRONG_PASSKEY
    report = {"version": lmstudio.__version__,
              "inference_lists": downloaded_keys(host, inference),
              "no_token": failure(lambda: downloaded_keys(host, None)),
              "wrong_token": failure(lambda: downloaded_keys(host, wrong)),
              "inference_load": failure(lambda: load_with(host, inference, model_key, "sdk16-refused")),
              "admin_load": load_with(host, admin, model_key, "sdk16-admin")}
    report["inference_respond"] = respond_with(host, inference, "sdk16-admin")
    unload_with(host, admin, "sdk16-admin")
    report["inference_download"] = failure(lambda: download_with(host, inference, search_term))
    report["admin_download"] = download_with(host, admin, search_term)
    return report


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:6])))
