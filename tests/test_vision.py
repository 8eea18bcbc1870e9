"""Images through a model with a vision projector (a random-weight one: the plumbing is what is tested)."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest

from tests.conftest import VISION_MODEL
from tests.test_unit_images import Handler, png  # noqa: F401  (the local image server's handler)

DATA_URL = "data:image/png;base64," + base64.b64encode(png(32, 32)).decode()


def test_vision_model_is_listed_with_vision(served):
    models = {m["modelKey"]: m for m in served.json("ls")}
    assert models[VISION_MODEL]["vision"] is True
    assert not any("mmproj" in m["path"] for m in models.values())


def test_responses_image_input_adds_image_tokens(client):
    text_only = client.responses.create(model=VISION_MODEL, input="What is in the picture?", max_output_tokens=8)
    with_image = client.responses.create(model=VISION_MODEL, max_output_tokens=8, input=[{
        "type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is in the picture?"},
            {"type": "input_image", "image_url": DATA_URL}]}])
    assert with_image.status in ("completed", "incomplete")
    assert with_image.usage.input_tokens == text_only.usage.input_tokens + 16  # 16 image tokens from the projector


def test_chat_completions_image_url_from_a_local_server(client):
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/heart.png"
        completion = client.chat.completions.create(model=VISION_MODEL, max_tokens=8, messages=[{
            "role": "user", "content": [{"type": "text", "text": "Describe it."},
                                        {"type": "image_url", "image_url": {"url": url}}]}])
        assert completion.usage.prompt_tokens > 16
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model=VISION_MODEL, max_tokens=8, messages=[{
                "role": "user", "content": [{"type": "image_url", "image_url": {
                    "url": f"http://127.0.0.1:{server.server_address[1]}/page.html"}}]}])
        assert error.value.body["code"] == "invalid_image"
    finally:
        server.shutdown()


def test_undecodable_image_is_a_400(served):
    garbage = "data:image/png;base64," + base64.b64encode(b"not a png").decode()
    response = httpx.post(served.base_url + "/v1/responses", timeout=60, json={
        "model": VISION_MODEL, "input": [{"role": "user", "content": [{"type": "input_image", "image_url": garbage}]}]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_image"


def test_an_image_too_large_to_decode_safely_is_a_400_before_the_engine_sees_it(served):
    """8,000 x 7,000 black pixels: 160 KB as a PNG, 56 megapixels (168 MB) decoded, over the 50-megapixel cap; the
    cap keeps a few megabytes of PNG from declaring 40,000 x 40,000 pixels (4.8 GB decoded)."""
    image = png(8_000, 7_000, pixel=b"\x00\x00\x00")
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    response = httpx.post(served.base_url + "/v1/chat/completions", timeout=60, json={
        "model": VISION_MODEL, "max_tokens": 4,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_image"
    assert "8000 x 7000" in response.json()["error"]["message"]
