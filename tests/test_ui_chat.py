"""The dashboard's Chat and Activity views in a real browser, against a real daemon and the bundled model.

The model is tiny, so the tests check structure (streamed text that grows and ends complete, the chain of stored
responses, log rows and plot values that appear live), never wording."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import zlib

import httpx
import pytest

from tests.conftest import REPO
from tests.ui_fixtures import shot

MODEL = "huggingfacetb/smollm2-135m-instruct"
THINKING = "lms-test/smollm2-135m-thinking"  # tools/thinking_gguf.py
LONG = 120_000  # ms: a 2-core machine loading a model and generating while a browser runs

ASSISTANT = "[data-testid=message][data-role=assistant]"
USER = "[data-testid=message][data-role=user]"

# Records each distinct length of the last assistant message's text while it streams.
WATCH_STREAM = """() => {
  window.__lengths = [];
  const transcript = document.querySelector('[data-testid=chat-transcript]');
  new MutationObserver(() => {
    const messages = transcript.querySelectorAll('[data-testid=message][data-role=assistant]');
    const last = messages[messages.length - 1];
    if (!last || last.dataset.status !== 'streaming') return;
    const length = [...last.querySelectorAll('[data-testid=message-text]')].map((n) => n.textContent).join('').length;
    if (length && window.__lengths[window.__lengths.length - 1] !== length) window.__lengths.push(length);
  }).observe(transcript, {subtree: true, childList: true, characterData: true});
}"""


def expect():
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


@pytest.fixture(scope="module")
def loaded(dashboard):  # noqa: F811
    """The chat model loaded with the CLI, as a user would before opening the playground; its identifier."""
    dashboard.run("load", MODEL, "-y", timeout=300)
    return next(m["identifier"] for m in dashboard.json("ps") if m["modelKey"] == MODEL)


def open_chat(page, model: str):  # noqa: F811
    page.click(".tabs a[data-view=chat]")
    expect()(page.locator("#view-chat")).to_be_visible()
    select = page.get_by_test_id("chat-model")
    expect()(select.locator(f'option[value="{model}"]')).to_have_count(1, timeout=LONG)
    select.select_option(model)
    return select


def set_field(page, testid: str, value: str):  # noqa: F811
    """Fill one of the settings, unfolding them first as a user would."""
    if not page.locator(".chat-settings").evaluate("node => node.open"):
        page.locator(".chat-settings > summary").click()
    page.get_by_test_id(testid).fill(value)


def send(page, text: str, *, enter: bool = True):  # noqa: F811
    """Type a message and send it (Enter, or the Send button); wait for the answer to end; return that message."""
    before = page.locator(ASSISTANT).count()
    box = page.get_by_test_id("chat-input")
    box.fill(text)
    if enter:
        box.press("Enter")
    else:
        page.get_by_test_id("chat-send").click()
    answer = page.locator(ASSISTANT).nth(before)
    expect()(answer).to_have_attribute("data-status", re.compile("complete|incomplete|failed|stopped"), timeout=LONG)
    return answer


def answer_text(answer) -> str:
    return "".join(answer.get_by_test_id("message-text").all_text_contents())


def response(dashboard, response_id: str) -> dict:  # noqa: F811
    reply = httpx.get(f"{dashboard.base_url}/v1/responses/{response_id}", timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()


def stored_text(stored: dict) -> str:
    return "".join(part.get("text", "") for item in stored["output"] if item["type"] == "message"
                   for part in item["content"])


def tiny_png() -> bytes:
    """A valid 2x2 RGB PNG, built by hand."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_chat_streams_an_answer_that_is_stored(page, dashboard, loaded):  # noqa: F811
    open_chat(page, loaded)
    expect()(page.get_by_test_id("chat-stop")).to_be_disabled()
    # the labels a screen reader reads
    for testid in ("chat-model", "chat-input", "chat-system", "chat-temperature", "chat-top-p", "chat-max-tokens"):
        control = page.get_by_test_id(testid)
        assert page.locator(f'label[for="{control.get_attribute("id")}"]').count() == 1, testid
    set_field(page, "chat-max-tokens", "48")
    page.evaluate(WATCH_STREAM)

    box = page.get_by_test_id("chat-input")
    box.fill("Write a short story about a cat.")
    box.press("Shift+Enter")  # a new line, not a send
    assert page.locator(ASSISTANT).count() == 0
    assert "\n" in box.input_value()
    answer = send(page, box.input_value() + "Two sentences.")

    expect()(answer).to_have_attribute("data-status", re.compile("complete|incomplete"))
    text = answer_text(answer)
    assert text.strip()
    assert int(answer.get_attribute("data-deltas")) >= 2
    lengths = page.evaluate("window.__lengths")
    assert len(lengths) >= 2 and lengths == sorted(lengths), lengths  # it grew while streaming
    assert page.locator(USER).count() == 1
    expect()(page.get_by_test_id("chat-send")).to_be_enabled()
    expect()(page.get_by_test_id("chat-stop")).to_be_disabled()

    entry = page.get_by_test_id("conversation")
    expect()(entry).to_have_count(1)
    expect()(entry).to_contain_text("Write a short story")
    response_id = entry.get_attribute("data-response-id")
    assert response_id == answer.get_attribute("data-response-id")
    stored = response(dashboard, response_id)
    assert stored["status"] in ("completed", "incomplete")
    assert stored["model"] == loaded and stored["store"] is True and stored["previous_response_id"] is None
    assert stored["max_output_tokens"] == 48
    assert stored_text(stored).strip() == text.strip()
    shot(page, "chat")

    # Stop: the stream is aborted, the page stays usable, and nothing joins the conversation
    set_field(page, "chat-max-tokens", "2000")
    page.get_by_test_id("chat-input").fill("Count from 1 to 500, one number per line.")
    page.get_by_test_id("chat-send").click()
    stopped = page.locator(ASSISTANT).nth(1)
    expect()(page.get_by_test_id("chat-stop")).to_be_enabled(timeout=LONG)
    page.get_by_test_id("chat-stop").click()
    expect()(stopped).to_have_attribute("data-status", re.compile("stopped|complete|incomplete"), timeout=LONG)
    expect()(page.get_by_test_id("chat-send")).to_be_enabled()
    if stopped.get_attribute("data-status") == "stopped":
        assert page.get_by_test_id("conversation").get_attribute("data-response-id") == response_id

    # New chat empties the transcript and starts a second conversation
    set_field(page, "chat-max-tokens", "16")
    page.get_by_test_id("chat-new").click()
    expect()(page.locator("[data-testid=message]")).to_have_count(0)
    second = send(page, "Hello!", enter=False)
    assert second.get_attribute("data-status") in ("complete", "incomplete")
    expect()(page.get_by_test_id("conversation")).to_have_count(2)
    assert response(dashboard, page.get_by_test_id("conversation").first.get_attribute("data-response-id"))[
        "previous_response_id"] is None


def test_a_conversation_continues_after_a_reload(page, dashboard, loaded):  # noqa: F811
    open_chat(page, loaded)
    set_field(page, "chat-max-tokens", "24")
    first = send(page, "My name is Ada. Say hi.")
    entry = page.get_by_test_id("conversation")
    first_id = entry.get_attribute("data-response-id")
    assert first.get_attribute("data-response-id") == first_id
    second = send(page, "What is my name?")
    expect()(entry).not_to_have_attribute("data-response-id", first_id)
    second_id = entry.get_attribute("data-response-id")
    assert response(dashboard, second_id)["previous_response_id"] == first_id
    answers = [answer_text(first), answer_text(second)]

    page.reload()
    page.click(".tabs a[data-view=chat]")
    expect()(page.get_by_test_id("conversation")).to_have_count(1)
    expect()(page.locator("[data-testid=message]")).to_have_count(0)
    page.get_by_test_id("conversation").locator("button").first.click()
    expect()(page.locator(USER)).to_have_count(2, timeout=LONG)
    expect()(page.locator(ASSISTANT)).to_have_count(2)
    expect()(page.locator(USER).nth(0)).to_contain_text("My name is Ada. Say hi.")
    expect()(page.locator(USER).nth(1)).to_contain_text("What is my name?")
    rebuilt = [answer_text(page.locator(ASSISTANT).nth(i)) for i in range(2)]
    assert [t.strip() for t in rebuilt] == [t.strip() for t in answers]
    expect()(page.get_by_test_id("chat-model")).to_have_value(loaded)

    third = send(page, "And what is 2 + 2?")
    assert third.get_attribute("data-status") in ("complete", "incomplete")
    expect()(page.get_by_test_id("conversation")).to_have_count(1)
    third_id = page.get_by_test_id("conversation").get_attribute("data-response-id")
    assert third_id not in (first_id, second_id)
    assert response(dashboard, third_id)["previous_response_id"] == second_id
    expect()(page.locator(USER)).to_have_count(3)


def test_presets_keep_system_prompt_and_sampling(page, dashboard, loaded):  # noqa: F811
    open_chat(page, loaded)
    set_field(page, "chat-system", "You answer in one word.")
    set_field(page, "chat-temperature", "0.3")
    set_field(page, "chat-max-tokens", "12")
    page.get_by_test_id("chat-preset-name").fill("terse")
    page.get_by_test_id("chat-preset-save").click()
    expect()(page.get_by_test_id("chat-preset")).to_have_value("terse")

    page.reload()
    open_chat(page, loaded)
    page.locator(".chat-settings > summary").click()
    expect()(page.get_by_test_id("chat-system")).to_have_value("")
    page.get_by_test_id("chat-preset").select_option("terse")
    expect()(page.get_by_test_id("chat-system")).to_have_value("You answer in one word.")
    expect()(page.get_by_test_id("chat-temperature")).to_have_value("0.3")
    send(page, "Name a color.")
    stored = response(dashboard, page.get_by_test_id("conversation").get_attribute("data-response-id"))
    assert stored["instructions"] == "You answer in one word."
    assert stored["temperature"] == pytest.approx(0.3) and stored["max_output_tokens"] == 12

    page.get_by_test_id("chat-preset-delete").click()
    expect()(page.get_by_test_id("chat-preset").locator("option[value=terse]")).to_have_count(0)


def test_an_image_is_previewed_and_sent_and_a_refusal_is_shown(page, dashboard, loaded):  # noqa: F811
    open_chat(page, loaded)
    assert page.locator("#view-chat").get_attribute("data-paste-handler") == "true"
    # a paste of an image goes through the same path as a chosen file
    page.evaluate("""() => {
      const data = new DataTransfer();
      data.items.add(new File([new Uint8Array([137, 80, 78, 71])], 'pasted.png', {type: 'image/png'}));
      const event = new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true});
      document.querySelector('[data-testid=chat-input]').dispatchEvent(event);
    }""")
    expect()(page.get_by_test_id("chat-attachment")).to_have_count(1)
    page.get_by_test_id("chat-attachment").locator("button").click()
    expect()(page.get_by_test_id("chat-attachment")).to_have_count(0)

    page.get_by_test_id("chat-file").set_input_files(
        {"name": "red.png", "mimeType": "image/png", "buffer": tiny_png()})
    preview = page.get_by_test_id("chat-attachment").locator("img")
    expect()(preview).to_have_count(1)
    assert preview.get_attribute("src").startswith("data:image/png;base64,")

    answer = send(page, "What is in this picture?")
    expect()(answer).to_have_attribute("data-status", "failed")
    error = answer.get_by_test_id("chat-error")
    expect()(error).to_be_visible()
    expect()(error).to_contain_text(re.compile("image", re.I))  # the server's refusal, in words
    expect()(page.get_by_test_id("chat-attachment")).to_have_count(0)
    sent = page.locator(USER).last.get_by_test_id("message-image")
    expect()(sent).to_have_count(1)
    assert sent.get_attribute("src").startswith("data:image/png;base64,")
    # the refused turn joined nothing; the chat goes on
    expect()(page.get_by_test_id("conversation")).to_have_count(0)
    set_field(page, "chat-max-tokens", "8")
    after = send(page, "Hi")
    assert after.get_attribute("data-status") in ("complete", "incomplete")


WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_reasoning_is_folded_and_tool_calls_are_cards(page, dashboard, loaded):  # noqa: F811
    import sys

    sys.path.insert(0, str(REPO))
    from tools.thinking_gguf import ensure_thinking_gguf

    # a model whose template opens <think>, downloaded but not loaded: listed after the loaded ones
    dashboard.link_model(ensure_thinking_gguf(), "lms-test", "SmolLM2-135M-Thinking-GGUF")
    open_chat(page, loaded)
    thinking = page.get_by_test_id("chat-model").locator(f'option[value="{THINKING}"]')
    expect()(thinking).to_have_count(1, timeout=LONG)
    groups = page.get_by_test_id("chat-model").locator("optgroup")
    assert groups.first.get_attribute("label") == "Loaded"
    assert groups.first.locator(f'option[value="{loaded}"]').count() == 1
    assert "Downloaded" in thinking.locator("xpath=..").get_attribute("label")

    page.get_by_test_id("chat-model").select_option(THINKING)
    set_field(page, "chat-temperature", "0")
    set_field(page, "chat-max-tokens", "24")
    answer = send(page, "What is 2+2?")  # loads the model just in time
    assert answer.get_attribute("data-status") in ("complete", "incomplete")
    reasoning = answer.get_by_test_id("reasoning")
    expect()(reasoning).to_have_count(1)
    assert reasoning.evaluate("node => node.tagName === 'DETAILS' && !node.open")  # folded away
    assert reasoning.locator(".chat-reasoning-text").text_content().strip()
    stored = response(dashboard, page.get_by_test_id("conversation").get_attribute("data-response-id"))
    assert stored["model"] == THINKING
    assert any(item["type"] == "reasoning" for item in stored["output"])
    reasoning.locator("summary").click()
    expect()(reasoning.locator(".chat-reasoning-text")).to_be_visible()

    # a function tool the model must call: the call comes back as a card with its name and arguments
    page.get_by_test_id("chat-new").click()
    page.get_by_test_id("chat-model").select_option(loaded)
    set_field(page, "chat-tools", json.dumps([WEATHER]))
    page.get_by_test_id("chat-tool-choice").select_option("required")
    set_field(page, "chat-max-tokens", "64")
    answer = send(page, "What is the weather in Paris?")
    card = answer.get_by_test_id("tool-card")
    expect()(card).to_have_count(1)
    expect()(card).to_contain_text("get_weather")
    stored = response(dashboard, page.get_by_test_id("conversation").first.get_attribute("data-response-id"))
    call = next(item for item in stored["output"] if item["type"] == "function_call")
    assert call["name"] == "get_weather" and "city" in json.loads(call["arguments"])
    shown = card.locator(".chat-tool-args").text_content()
    assert json.loads(shown) == json.loads(call["arguments"])
    shot(page, "chat-tools")

    # tools that are not JSON are refused before anything is sent
    set_field(page, "chat-tools", "[not json")
    page.get_by_test_id("chat-input").fill("Again?")
    page.get_by_test_id("chat-send").click()
    expect()(page.locator("[data-testid=toast][data-kind=error]")).to_contain_text("JSON")
    assert page.locator(ASSISTANT).count() == 1


def test_activity_shows_live_logs_and_plots(page, dashboard, loaded):  # noqa: F811
    page.click(".tabs a[data-view=activity]")
    expect()(page.locator("#view-activity")).to_be_visible()
    for name in ("tokens-per-second", "ttft", "requests", "memory"):
        expect()(page.get_by_test_id(f"plot-{name}")).to_be_visible()
    expect()(page.locator("#live-status")).to_have_text("live", timeout=LONG)

    def ask(text: str) -> dict:
        body = {"model": loaded, "messages": [{"role": "user", "content": text}], "max_tokens": 16}
        result = subprocess.run(["curl", "-sS", "--max-time", "120", f"{dashboard.base_url}/v1/chat/completions",
                                 "-H", "Content-Type: application/json", "-d", json.dumps(body)],
                                capture_output=True, text=True, timeout=150, check=True)
        return json.loads(result.stdout)

    answer = ask("Tell me about owls.")
    prompts = page.locator('[data-testid=log-row][data-type="llm.prediction.input"]')
    answers = page.locator('[data-testid=log-row][data-type="llm.prediction.output"]')
    expect()(prompts.last).to_contain_text("Tell me about owls.", timeout=LONG)
    expect()(answers).to_have_count(1, timeout=LONG)
    expect()(answers.last).to_contain_text(answer["choices"][0]["message"]["content"].strip()[:20])
    expect()(page.get_by_test_id("plot-value-tokens-per-second")).to_have_text(re.compile(r"^\d+(\.\d+)? tok/s$"),
                                                                               timeout=LONG)
    expect()(page.get_by_test_id("plot-value-ttft")).to_have_text(re.compile(r"^\d+(\.\d+)? (ms|s)$"))
    expect()(page.get_by_test_id("plot-value-memory")).to_have_text(re.compile(r"^\d+(\.\d+)? (B|KB|MB|GB)$"))
    shot(page, "activity")

    # filters: by type and by text
    page.get_by_test_id("log-filter-prompt").uncheck()
    expect()(prompts).to_have_count(0)
    expect()(answers).to_have_count(1)
    page.get_by_test_id("log-filter-prompt").check()
    expect()(prompts).not_to_have_count(0)
    page.get_by_test_id("log-filter-text").fill("no such text anywhere 1234")
    expect()(page.get_by_test_id("log-row")).to_have_count(0)
    page.get_by_test_id("log-filter-text").fill("")

    # pause holds new rows back until resumed
    page.get_by_test_id("log-pause").click()
    ask("Tell me about foxes.")
    expect()(page.get_by_test_id("log-count")).to_contain_text("new", timeout=LONG)
    expect()(answers).to_have_count(1)
    page.get_by_test_id("log-pause").click()
    expect()(answers).to_have_count(2)
    expect()(prompts.last).to_contain_text("Tell me about foxes.")
