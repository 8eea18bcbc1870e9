"""LM Studio's SDKs and CLI find a server with no host: lms also listens on the first free of LM Studio's
well-known API ports (loopback only), and answers `/lmstudio-greeting` and `/lms-status` there."""

from __future__ import annotations

import httpx
import lmstudio
import pytest

from lms.daemon.http_server import SDK_DISCOVERY_PORTS
from tests.conftest import CHAT_MODEL


def test_the_server_names_its_sdk_port_and_answers_the_probes_there(served):
    status = served.json("server", "status")
    port = status.get("sdkPort")
    if port is None:
        pytest.skip("every well-known port is held by other servers on this machine")
    assert port in SDK_DISCOVERY_PORTS
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(base + "/lmstudio-greeting").json() == {"lmstudio": True}
    identity = httpx.get(base + "/lms-status").json()
    assert identity["package"] == "lms" and identity["version"]
    assert httpx.get(served.base_url + "/lms-status").json() == identity  # and on the main port
    assert CHAT_MODEL in {model["id"] for model in httpx.get(base + "/v1/models").json()["data"]}


def test_the_python_sdk_connects_with_no_host(served):
    port = served.json("server", "status").get("sdkPort")
    if port is None or _answered_before(port):
        pytest.skip("another server answers on an earlier well-known port: the SDK would find that one")
    with lmstudio.Client() as client:  # no host: the SDK probes the well-known ports
        assert client.api_host == f"127.0.0.1:{port}"
        keys = {model.model_key for model in client.list_downloaded_models()}
        assert CHAT_MODEL in keys


def _answered_before(port: int) -> bool:
    """Whether a server answers the greeting on a well-known port the SDK tries before `port`."""
    for candidate in SDK_DISCOVERY_PORTS[:SDK_DISCOVERY_PORTS.index(port)]:
        try:
            if httpx.get(f"http://127.0.0.1:{candidate}/lmstudio-greeting", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            continue
    return False
