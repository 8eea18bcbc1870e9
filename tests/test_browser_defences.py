"""A web page the user opens cannot drive the server (real daemon): a foreign Host (DNS rebinding) or Origin is
403 on HTTP and WebSocket alike, and a body a page can send without asking (text/plain, a form) is 415."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import CHAT_MODEL

CHAT = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def test_a_rebound_host_is_refused(served):
    response = httpx.get(served.base_url + "/v1/models", headers={"Host": "attacker.example"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "host_not_allowed"
    assert httpx.get(served.base_url.replace("127.0.0.1", "localhost") + "/v1/models").status_code == 200


def test_a_foreign_origin_is_refused_before_any_work(served):
    response = httpx.post(served.base_url + "/v1/chat/completions", json=CHAT,
                          headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in response.headers
    with pytest.raises(InvalidStatus) as refused:
        connect(served.base_url.replace("http://", "ws://") + "/v1/responses", open_timeout=10,
                additional_headers={"Origin": "https://evil.example"}).close()
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_bodies_a_page_can_send_unasked_are_415(served, content_type):
    response = httpx.post(served.base_url + "/v1/chat/completions", content=json.dumps(CHAT),
                          headers={"Content-Type": content_type})
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"
    ok = httpx.post(served.base_url + "/v1/chat/completions", content=json.dumps(CHAT),
                    headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200
