"""The dashboard's management views in a real browser, against a real daemon and the real model, as a user acts:
load with the memory estimate shown first (and refused by the guardrails), see it live in Loaded and unload it,
download from the (local) Hub and watch the progress, manage API tokens, and use it in a narrow window and from the
keyboard. Screenshots of each view go to test-artifacts/screenshots/."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.conftest import CHAT_MODEL
from tests.ui_fixtures import HUB_REPO, shot

LOAD_MS = 180_000  # a load on a slow 2-core machine
FEED_MS = 30_000  # what the live feed takes to show a change (it compares every 0.25 s)
EXPECT_MS = 20_000  # any other assertion on the page (an estimate, an answer of the API)


def model_card(tab, key: str):
    return tab.locator(f'[data-testid="model-card"][data-model-key="{key}"]')


def loaded_row(tab, identifier: str):
    return tab.locator(f'[data-testid="loaded-row"][data-identifier="{identifier}"]')


def open_view(tab, name: str, label: str):
    tab.get_by_role("navigation", name="Views").get_by_role("link", name=label, exact=True).click()
    expect(tab.locator(f"#view-{name}")).to_be_visible()
    expect(tab.locator(f'.tabs a[href="#{name}"]')).to_have_attribute("aria-current", "page")


def test_load_with_the_estimate_first_see_it_live_and_unload(page, dashboard):  # noqa: F811
    expect(page.locator("#live-status")).to_have_text("live", timeout=FEED_MS)
    card = model_card(page, CHAT_MODEL)
    expect(card).to_be_visible(timeout=FEED_MS)
    card.get_by_label("Context length").fill("2048")
    estimate = card.get_by_test_id("estimate")
    expect(estimate).to_have_attribute("data-state", "ok")
    expect(estimate).to_contain_text("2,048-token context")
    expect(estimate).to_contain_text("Estimated memory")
    shot(page, "models")

    card.get_by_test_id("load-button").click()
    expect(card.locator(f'[data-testid="unload-button"][data-identifier="{CHAT_MODEL}"]')).to_be_visible(
        timeout=LOAD_MS)
    loaded = dashboard.json("ps")
    assert [(m["identifier"], m["contextLength"]) for m in loaded] == [(CHAT_MODEL, 2048)]

    open_view(page, "loaded", "Loaded")
    row = loaded_row(page, CHAT_MODEL)
    expect(row).to_be_visible()
    expect(row.get_by_test_id("loaded-context")).to_contain_text("2,048")
    expect(row.get_by_test_id("loaded-status")).to_have_text("idle")
    expect(row.get_by_test_id("loaded-slots")).to_contain_text("0 / 4")
    expect(row.get_by_test_id("loaded-memory")).to_contain_text("MB")

    # a model loaded elsewhere (the CLI) shows up without a reload, with its TTL counting down
    dashboard.run("load", CHAT_MODEL, "--identifier", "from-the-cli", "-c", "1024", "--ttl", "600", "-y")
    other = loaded_row(page, "from-the-cli")
    expect(other).to_be_visible(timeout=FEED_MS)
    expect(other.get_by_test_id("loaded-ttl")).to_contain_text("left")
    shot(page, "loaded")

    row.get_by_test_id("unload-button").click()
    other.get_by_test_id("unload-button").click()
    expect(page.locator('[data-testid="loaded-row"]')).to_have_count(0, timeout=FEED_MS)
    assert dashboard.json("ps") == []
    expect(page.locator("#view-loaded")).to_contain_text("No model is loaded")


def test_the_guardrails_turn_the_estimate_red_and_refuse_the_load(page, dashboard):  # noqa: F811
    # 600 MB for models: a 2048-token context (about 400 MB) fits, the model's whole 8192 (over 1 GB) does not
    dashboard.run("config", "set", "memory_limit_bytes", str(600 * 1000 * 1000))
    try:
        card = model_card(page, CHAT_MODEL)
        expect(card).to_be_visible(timeout=FEED_MS)
        context = card.get_by_label("Context length")
        estimate = card.get_by_test_id("estimate")
        load = card.get_by_test_id("load-button")

        context.fill("8192")
        expect(estimate).to_have_attribute("data-state", "refused")
        expect(estimate).to_have_class("estimate error")
        expect(estimate).to_contain_text("Won't load")
        expect(estimate).to_contain_text("guardrails: relaxed")
        expect(load).to_be_disabled()
        expect(load).to_have_text("Won't fit in memory")
        shot(page, "models-refused")

        context.fill("1000000")  # beyond what the model takes at all: the daemon's reason, in red
        expect(estimate).to_have_attribute("data-state", "invalid")
        expect(estimate).to_contain_text("1 to 8192")
        expect(load).to_be_disabled()

        context.fill("2048")
        expect(estimate).to_have_attribute("data-state", "ok")
        expect(load).to_be_enabled()
        expect(load).to_have_text("Load")
    finally:
        dashboard.run("config", "unset", "memory_limit_bytes")
    assert dashboard.json("ps") == []


def test_search_the_hub_download_cancel_resume_and_watch_it_arrive(page, dashboard):  # noqa: F811
    model_file_bytes = 98_362_432
    dashboard.hub.throttle_bytes_per_second = model_file_bytes // 6  # about 6 s: several progress updates
    try:
        open_view(page, "downloads", "Downloads")
        page.get_by_test_id("hub-search").fill("Tiny")
        page.get_by_test_id("hub-search-button").click()
        result = page.locator(f'[data-testid="hub-result"][data-repo="{HUB_REPO}"]')
        expect(result).to_be_visible()
        result.click()
        download = page.get_by_test_id("download-button")
        expect(download).to_have_count(1)
        expect(page.get_by_test_id("hub-variants")).to_contain_text("98.4 MB")  # the variant's size, readable
        shot(page, "downloads-search")
        download.click()

        # cancel it once it has started; Resume starts it again, from where it stopped
        jobs = page.locator('[data-testid="job-row"]').filter(has_text=HUB_REPO)
        expect(jobs).to_have_count(1, timeout=FEED_MS)
        first = jobs.first
        first_id = first.get_attribute("data-job-id")
        expect(first.get_by_test_id("job-progress")).not_to_have_attribute("aria-valuenow", "0", timeout=FEED_MS)
        first.get_by_test_id("job-cancel").click()
        cancelled = page.locator(f'[data-testid="job-row"][data-job-id="{first_id}"]')
        expect(cancelled).to_have_attribute("data-status", "cancelled", timeout=FEED_MS)
        stopped_at = float(cancelled.get_by_test_id("job-progress").get_attribute("aria-valuenow"))
        assert 0 < stopped_at < 100
        expect(cancelled.get_by_test_id("job-cancel")).to_be_hidden()
        shot(page, "downloads-cancelled")
        cancelled.get_by_test_id("job-resume").click()

        expect(jobs).to_have_count(2, timeout=FEED_MS)
        job = page.locator('[data-testid="job-row"]').first  # the newest first
        expect(job).not_to_have_attribute("data-job-id", first_id)
        expect(cancelled.get_by_test_id("job-resume")).to_be_hidden()  # resumed: the old job is history
        progress = job.get_by_test_id("job-progress")
        seen: list[float] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            value = float(progress.get_attribute("aria-valuenow") or 0)
            if not seen or seen[-1] != value:
                seen.append(value)
                if 0 < value < 100 and len(seen) == 3:
                    expect(job.get_by_test_id("job-meta")).to_contain_text("/s")  # speed and ETA while running
                    shot(page, "downloads-progress")
            if value >= 100 and job.get_attribute("data-status") == "completed":
                break
            page.wait_for_timeout(100)
        assert seen[-1] == 100, seen
        assert len([v for v in seen if 0 < v < 100]) >= 2, f"too few progress updates: {seen}"
        assert seen == sorted(seen), seen
        assert min(v for v in seen if v > 0) >= stopped_at - 1, f"it started again from 0: {seen}"
        expect(job.get_by_test_id("job-status")).to_have_text("completed")
        expect(job.get_by_test_id("job-percent")).to_contain_text("100%")
        expect(download).to_have_text("Downloaded")
        expect(download).to_be_disabled()
        shot(page, "downloads")
    finally:
        dashboard.hub.throttle_bytes_per_second = None

    listed = [m for m in dashboard.json("ls") if m["path"].startswith(HUB_REPO + "/")]
    assert len(listed) == 1, listed
    open_view(page, "models", "Models")
    card = model_card(page, listed[0]["modelKey"])
    expect(card).to_be_visible(timeout=FEED_MS)
    shot(page, "models-after-download")

    # and Delete, after a confirmation, removes it from the disk and from the page
    card.get_by_test_id("delete-button").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.get_by_test_id("confirm-ok").click()
    expect(card).to_have_count(0, timeout=FEED_MS)
    assert not [m for m in dashboard.json("ls") if m["path"].startswith(HUB_REPO + "/")]


def test_tokens_from_the_page(page, dashboard):  # noqa: F811
    open_view(page, "server", "Server")
    help_text = page.get_by_test_id("admin-help")
    expect(help_text).to_contain_text("lms server token create NAME --scope admin")  # no token yet: how to start
    expect(page.get_by_test_id("server-endpoints")).to_contain_text(dashboard.base_url + "/v1")
    expect(page.get_by_test_id("server-status")).to_contain_text("127.0.0.1")
    shot(page, "server-no-token")

    admin = dashboard.json("server", "token", "create", "ui-admin", "--scope", "admin")["token"]
    try:
        page.reload()  # a token exists now: the page asks for one, and says how to get it
        banner = page.locator("#auth-banner")
        expect(banner).to_be_visible(timeout=FEED_MS)
        expect(banner).to_contain_text("lms server token create NAME --scope admin")
        expect(page.locator("#live-status")).to_have_text("offline")
        expect(page.get_by_test_id("server-status")).to_contain_text("An API token is required")
        shot(page, "server-token-needed")

        page.get_by_test_id("token-input").fill(admin)
        page.get_by_test_id("token-save").click()
        expect(page.get_by_test_id("token-state")).to_contain_text(admin.split(":")[0])
        expect(page.locator('[data-testid="token-row"][data-name="ui-admin"]')).to_be_visible()
        expect(page.get_by_test_id("server-settings")).to_contain_text("allowed_hosts")  # GET /lms/config, as admin
        expect(page.locator("#live-status")).to_have_text("live", timeout=FEED_MS)  # the feed, with the token
        expect(banner).to_be_hidden()

        page.get_by_test_id("token-name").fill("from-the-page")
        page.get_by_test_id("token-scope").select_option("inference")
        page.get_by_test_id("token-create").click()
        secret = page.get_by_test_id("token-secret")
        expect(secret).to_be_visible()
        value = secret.input_value()
        assert value.startswith("sk-lm-") and ":" in value
        expect(page.get_by_test_id("token-secret-box")).to_contain_text("not be shown again")
        row = page.locator('[data-testid="token-row"][data-name="from-the-page"]')
        expect(row).to_contain_text("inference")
        assert "from-the-page" in {t["name"] for t in dashboard.json("server", "token", "ls")}
        assert value not in page.locator('[data-testid="token-list"]').inner_text()  # never in the list
        shot(page, "server-tokens")

        page.get_by_test_id("token-secret-done").click()
        expect(secret).to_have_count(0)  # shown once
        row.get_by_test_id("token-revoke").click()
        expect(page.locator("#confirm-dialog")).to_be_visible()
        page.get_by_test_id("confirm-ok").click()
        expect(row).to_have_count(0)
        assert {t["name"] for t in dashboard.json("server", "token", "ls")} == {"ui-admin"}
    finally:
        dashboard.run("server", "token", "revoke", "ui-admin")
    assert dashboard.json("server", "token", "ls") == []


def test_a_narrow_window_and_the_keyboard(page, dashboard):  # noqa: F811
    page.set_viewport_size({"width": 390, "height": 800})
    expect(model_card(page, CHAT_MODEL)).to_be_visible(timeout=FEED_MS)
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the Models view scrolls sideways by {overflow}px"
    nav = page.get_by_role("navigation", name="Views")
    for label in ("Models", "Loaded", "Downloads", "Chat", "Activity", "Server"):
        link = nav.get_by_role("link", name=label, exact=True)
        expect(link).to_be_visible()
        expect(link).to_be_in_viewport()
    shot(page, "narrow-models")

    reached = None
    for _ in range(12):
        page.keyboard.press("Tab")
        reached = page.evaluate("document.activeElement && document.activeElement.textContent.trim()")
        if reached == "Downloads":
            break
    assert reached == "Downloads", f"Tab never reached the Downloads tab (last: {reached!r})"
    page.keyboard.press("Enter")
    expect(page.locator("#view-downloads")).to_be_visible()
    expect(page.locator("#view-models")).to_be_hidden()
    expect(nav.get_by_role("link", name="Downloads", exact=True)).to_have_attribute("aria-current", "page")
    assert page.evaluate("location.hash") == "#downloads"
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the Downloads view scrolls sideways by {overflow}px"
    shot(page, "narrow-downloads")


@pytest.fixture(autouse=True)
def _patient_and_clean(dashboard):  # noqa: F811
    """Assertions wait as long as a slow machine needs; each test leaves the daemon with nothing loaded."""
    expect.set_options(timeout=EXPECT_MS)
    try:
        yield
    finally:
        expect.set_options(timeout=5_000)  # Playwright's default, for the other test modules
        if dashboard.json("ps"):
            dashboard.run("unload", "--all")
