"""The fault and load scenarios of issue #15 item 8, run against a real daemon with real models.

Each scenario is one function that drives an lms installation (tests/conftest.py's `Lms`), measures, and returns
an `Outcome`: the figures it measured and the checks it made, each held or not. bench/soak.py runs them at full
size and prints the figures; tests/test_faults.py runs them small and asserts the checks. Sizes are parameters.

    fuzz                  mutated bodies on every public JSON endpoint (tests/test_fuzz.py's cases): 0 5xx, 0 drops
    worker_kill           kill -9 of a worker mid-stream: an error event, [DONE], the model answers again
    daemon_kill           kill -9 of the daemon mid-stream: the client sees an error (no hang), lms brings the
                          daemon back, every stored response is there unchanged
    download_kill         kill -9 of the daemon mid-download: nothing half-downloaded in models/, `lms get`
                          again finishes a file identical to the Hub's
    store_kill            kill -9 of the daemon while responses are being written: the db opens and checks out,
                          every acknowledged response is there and complete
    disk_full             LMS_HOME on a full file system while a response is stored: a clean error, store intact
    corrupt_db            a corrupt lms.db: moved aside, the daemon starts, a fresh store works
    bad_model             a malformed GGUF in models/: the others list, load and answer; the bad one is a 4xx
    slow_image            an image server that sends one byte a second: the request ends within the deadline
    hanging_mcp           an MCP server that accepts and never answers: the request fails within the deadline
    mixed_load            clients x mixed requests with hang-ups: 0 errors, memory within a bound of the start
    open_streams          N open streaming connections: /v1/models still answers (p50/p99)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import math
import os
import random
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.conftest import CHAT_MODEL, REPO, VISION_MODEL, Lms, free_port

IMAGE_DEADLINE_SECONDS = 10.0  # lms.pipeline.images.FETCH_TIMEOUT_SECONDS, the deadline under test
LONG_STORY = {"messages": [{"role": "user", "content": "Write a very long story about the sea."}],
              "temperature": 0.8, "logit_bias": {"2": -100}}  # token 2 (EOS) banned: it runs until max_tokens


@dataclass
class Outcome:
    """What one scenario measured (`figures`, printed) and checked (`checks`: what -> held)."""

    scenario: str
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what a reader needs when a check failed (log lines, bodies)

    def check(self, what: str, held: bool) -> bool:
        self.checks[what] = bool(held)
        return bool(held)

    @property
    def ok(self) -> bool:
        return all(self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [what for what, held in self.checks.items() if not held]

    def explain(self) -> str:
        return f"{self.scenario}: failed {self.failed}; figures {self.figures}; notes {self.notes}"


# --- installations and processes ------------------------------------------------------------------------------


def served(home: Path, *, remote_mcp: bool = False, vision: bool = False, embedding: Path | None = None,
           **settings: str) -> Lms:
    """A fresh installation at `home` with the server on and the chat model loaded; `vision` links the bundled
    model with a projector as VISION_MODEL, `embedding` links that GGUF as EMBEDDING_MODEL."""
    lms = Lms(home=home, port=free_port(), settings={"LMS_JIT_AUTO_EVICT": "false", **settings})
    home.mkdir(parents=True, exist_ok=True)
    if embedding is not None:
        lms.link_model(embedding, "sentence-transformers", "all-MiniLM-L6-v2-GGUF")
    if vision:
        from lms.store.catalog import bundled_model_file
        from tools.make_projector import ensure_projector

        lms.link_model(bundled_model_file(), "lms-test", "smollm2-135m-vision")
        ensure_projector(home / "models" / "lms-test" / "smollm2-135m-vision")
    start_server(lms, remote_mcp=remote_mcp)
    lms.run("load", CHAT_MODEL, "-y")
    return lms


def start_server(lms: Lms, remote_mcp: bool = False) -> None:
    """`lms server start` on the installation's port (starting the daemon if none runs)."""
    lms.run("server", "start", "-p", str(lms.port), *(["--allow-remote-mcp"] if remote_mcp else []))


def daemon_pid(lms: Lms) -> int:
    return int((lms.home / ".internal" / "daemon.pid").read_text())


def loaded(lms: Lms) -> dict[str, dict]:
    return {m["identifier"]: m for m in lms.control().get("/lms/ps")}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, every: float = 0.05):
    """The first true value of predicate() within timeout, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value or None
        time.sleep(every)


def kill9(pid: int, timeout: float = 10.0) -> bool:
    """SIGKILL a process; True once it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return bool(wait_for(lambda: not alive(pid), timeout))


def family_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (the daemon and its workers)."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def idle(lms: Lms) -> bool:
    """Every loaded model is idle with nothing queued."""
    return all(m["queued"] == 0 and m["status"] == "idle" for m in loaded(lms).values())


def log_tail(lms: Lms, lines: int = 12) -> str:
    """The last lines of the daemon's logs, for an outcome's notes."""
    tail: list[str] = []
    for log in sorted((lms.home / "server-logs").glob("*.log")):
        with contextlib.suppress(OSError):
            tail += [f"{log.name}: {line[:300]}" for line in log.read_text(errors="replace").splitlines()[-lines:]]
    return "\n".join(tail)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def chat(lms: Lms, timeout: float = 120, **body) -> httpx.Response:
    return httpx.post(lms.base_url + "/v1/chat/completions", timeout=timeout, json={
        "model": CHAT_MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, **body})


def store_response(lms: Lms, text: str, timeout: float = 120, **body) -> httpx.Response:
    return httpx.post(lms.base_url + "/v1/responses", timeout=timeout, json={
        "model": CHAT_MODEL, "input": text, "max_output_tokens": 8, "store": True, **body})


def store_several(lms: Lms, count: int, what: str) -> dict[str, dict]:
    """Store `count` responses; the ones acknowledged, by id."""
    acknowledged = {}
    for number in range(count):
        answer = store_response(lms, f"Remember the {what} {number}.")
        if answer.status_code == 200:
            acknowledged[answer.json()["id"]] = answer.json()
    return acknowledged


def sse_data(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if line.startswith("data: "):
            yield line[6:]


def db_check(path: Path) -> tuple[str, int, int]:
    """(integrity_check's answer, rows, rows whose JSON columns do not parse) of a response store, read directly
    (a kill -9 leaves a WAL behind: opening the file replays it, as the daemon would)."""
    db = sqlite3.connect(str(path))
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows = db.execute("SELECT response, input_items, context FROM responses").fetchall()
    finally:
        db.close()
    broken = 0
    for row in rows:
        try:
            for column in row:
                json.loads(column)
        except ValueError:
            broken += 1
    return integrity, len(rows), broken


def stored_intact(lms: Lms, acknowledged: dict[str, dict]) -> tuple[int, list[str]]:
    """(how many acknowledged responses the daemon serves unchanged, the ids it lost or changed)."""
    found, wrong = 0, []
    with httpx.Client(base_url=lms.base_url, timeout=60) as client:
        for response_id, body in acknowledged.items():
            got = client.get(f"/v1/responses/{response_id}")
            if got.status_code == 200 and got.json() == body:
                found += 1
            else:
                wrong.append(f"{response_id}: {got.status_code}")
    return found, wrong


# --- fuzz -----------------------------------------------------------------------------------------------------


def fuzz(lms: Lms, cases_per_endpoint: int) -> Outcome:
    """tests/test_fuzz.py's seeded mutations of every public JSON endpoint (the installation needs the embedding
    model linked): every answer below 500, no connection dropped, the models answer afterwards."""
    from tests import test_fuzz

    outcome = Outcome("fuzz")
    sent = server_errors = dropped = 0
    test_fuzz.CASES_PER_ENDPOINT = cases_per_endpoint  # cases() reads it
    started = time.monotonic()
    with httpx.Client(base_url=lms.base_url, timeout=120) as client:
        for endpoint in test_fuzz.BODIES:
            for what, raw in test_fuzz.cases(endpoint, seed=zlib.crc32(endpoint.encode())):
                sent += 1
                try:
                    response = client.post(endpoint.split("#")[0], content=raw,
                                           headers={"Content-Type": "application/json"})
                except httpx.HTTPError as exc:
                    dropped += 1
                    outcome.notes.append(f"{endpoint} {what}: {type(exc).__name__}")
                    continue
                if response.status_code >= 500:
                    server_errors += 1
                    outcome.notes.append(f"{endpoint} {what}: {response.status_code} {response.text[:200]}")
        answers = client.post("/v1/chat/completions", json=test_fuzz.BODIES["/v1/chat/completions"]).status_code
    outcome.figures.update(sent=sent, server_errors=server_errors, dropped=dropped,
                           seconds=round(time.monotonic() - started, 1))
    outcome.check("0 answers of 500 or more", server_errors == 0)
    outcome.check("0 dropped connections", dropped == 0)
    outcome.check("the model answers afterwards", answers == 200)
    return outcome


# --- kill -9 --------------------------------------------------------------------------------------------------


def worker_kill(lms: Lms) -> Outcome:
    """kill -9 of the worker of a model that is streaming: the stream carries one worker_died error and ends with
    [DONE]; the next request loads the model again (JIT) and is answered."""
    outcome = Outcome("kill -9 worker mid-stream")
    victim = loaded(lms)[CHAT_MODEL]["pid"]
    events, killed_at = [], None
    with httpx.stream("POST", lms.base_url + "/v1/chat/completions", timeout=120, json={
            "model": CHAT_MODEL, **LONG_STORY, "max_tokens": 3000, "stream": True}) as response:
        for data in sse_data(response.iter_lines()):
            events.append(data)
            if len(events) == 5:
                killed_at = time.monotonic()
                os.kill(victim, signal.SIGKILL)
    ended_after = time.monotonic() - killed_at if killed_at else None
    errors = [json.loads(e).get("error") for e in events if e != "[DONE]" and "error" in json.loads(e)]
    outcome.figures.update(stream_ended_after_kill_s=round(ended_after or -1, 2),
                           error_codes=[e.get("code") for e in errors if isinstance(e, dict)])
    outcome.check("one worker_died error event", len(errors) == 1 and errors[0].get("code") == "worker_died")
    outcome.check("the stream ends with [DONE]", bool(events) and events[-1] == "[DONE]")
    outcome.check("the worker is gone and shown unloaded", not alive(victim) and CHAT_MODEL not in loaded(lms))
    again = chat(lms)
    outcome.check("the next request reloads the model and is answered", again.status_code == 200)
    return outcome


def daemon_kill(lms: Lms, stored: int = 5) -> Outcome:
    """kill -9 of the daemon while a chat streams: the client gets an error within seconds (no hang), the workers
    end with it, `lms server start` brings the daemon back, and every response stored before is served unchanged."""
    outcome = Outcome("kill -9 daemon mid-stream")
    acknowledged = store_several(lms, stored, "number")
    pid = daemon_pid(lms)
    workers = [m["pid"] for m in loaded(lms).values()]
    events, seen, killed_at, ended_after = 0, "no error", None, None
    try:
        with httpx.stream("POST", lms.base_url + "/v1/chat/completions", timeout=120, json={
                "model": CHAT_MODEL, **LONG_STORY, "max_tokens": 3000, "stream": True}) as response:
            for _ in sse_data(response.iter_lines()):
                events += 1
                if events == 5:
                    killed_at = time.monotonic()
                    os.kill(pid, signal.SIGKILL)
        seen = "the stream ended without an error"
    except httpx.TimeoutException as exc:
        seen = f"a hang, until the client's timeout ({type(exc).__name__})"
    except httpx.HTTPError as exc:
        seen = type(exc).__name__
    if killed_at:
        ended_after = time.monotonic() - killed_at
    outcome.figures.update(stored_before=len(acknowledged), client_saw=seen,
                           client_error_after_s=round(ended_after if ended_after is not None else -1, 2))
    outcome.check("the client sees an error", seen not in ("no error", "the stream ended without an error")
                  and not seen.startswith("a hang"))
    outcome.check("it sees it within 10 s", ended_after is not None and ended_after < 10)
    outcome.check("the daemon is gone", kill9(pid))
    outcome.check("its workers end with it", wait_for(lambda: not any(alive(w) for w in workers), 15) is not None)
    started = time.monotonic()
    start_server(lms)
    outcome.figures["back_after_s"] = round(time.monotonic() - started, 2)
    outcome.check("lms brings the daemon back", lms.json("daemon", "status")["status"] == "running"
                  and daemon_pid(lms) != pid)
    found, wrong = stored_intact(lms, acknowledged)
    outcome.figures["stored_intact"] = f"{found}/{len(acknowledged)}"
    outcome.check("every stored response is there unchanged", not wrong and found == stored)
    outcome.notes += wrong
    outcome.check("the model loads and answers again", chat(lms).status_code == 200)
    return outcome


def store_kill(lms: Lms, rounds: int = 1, writers: int = 4, seed: int = 15) -> Outcome:
    """kill -9 of the daemon while `writers` clients store responses as fast as they can, the instant its write-ahead
    log changes after a random delay (so inside a write, or just after one): after each kill the db opens and passes
    integrity_check, no row is cut short, and after `lms server start` every response whose 200 reached its client
    is served unchanged."""
    outcome = Outcome("kill -9 daemon mid-write of stored responses")
    rng = random.Random(seed)
    acknowledged: dict[str, dict] = {}
    killed_in_flight, integrity_seen, broken_rows, lost = 0, set(), 0, []
    for round_ in range(rounds):
        killed_in_flight += _write_until_killed(lms, f"{round_}", writers, rng.uniform(0.2, 2.0), acknowledged)
        integrity, rows, broken = db_check(lms.home / "lms.db")
        integrity_seen.add(integrity)
        broken_rows += broken
        start_server(lms)
        lost += stored_intact(lms, acknowledged)[1]
    outcome.figures.update(kills=rounds, acknowledged=len(acknowledged), in_flight_at_kills=killed_in_flight,
                           integrity="/".join(sorted(integrity_seen)), cut_rows=broken_rows, lost=len(lost))
    outcome.check("the db opens and passes integrity_check", integrity_seen == {"ok"})
    outcome.check("no row is cut short", broken_rows == 0)
    outcome.check("every acknowledged response is there unchanged", not lost and len(acknowledged) > 0)
    outcome.check("requests were in flight at each kill", killed_in_flight >= rounds)
    outcome.notes += lost[:10]
    return outcome


def _write_until_killed(lms: Lms, tag: str, writers: int, delay: float, acknowledged: dict[str, dict]) -> int:
    """Writers store responses until the daemon is killed, at the first change of the WAL `delay` seconds after
    each has had one stored; the
    acknowledged ones are added to `acknowledged`. Returns how many requests were in flight at the kill."""
    stop, lock, in_flight = threading.Event(), threading.Lock(), [0]
    before = len(acknowledged)

    def writer(number: int) -> None:
        with httpx.Client(base_url=lms.base_url, timeout=60) as client:
            count = 0
            while not stop.is_set():
                count += 1
                with lock:
                    in_flight[0] += 1
                try:
                    answer = client.post("/v1/responses", json={
                        "model": CHAT_MODEL, "input": f"Note {tag}-{number}-{count}: reply ok.", "store": True,
                        "max_output_tokens": 2})
                    if answer.status_code == 200:
                        with lock:
                            acknowledged[answer.json()["id"]] = answer.json()
                except httpx.HTTPError:
                    return  # the daemon died under this request
                finally:
                    with lock:
                        in_flight[0] -= 1

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(writers)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acknowledged) >= before + writers, 120)  # the writers are at full pace
    time.sleep(delay)
    pid, workers = daemon_pid(lms), [m["pid"] for m in loaded(lms).values()]
    # Kill the moment the write-ahead log changes: the daemon is then inside a write of the store (or has just
    # made one), not somewhere in a generation.
    wal, deadline = lms.home / "lms.db-wal", time.monotonic() + 30
    last = _stamp(wal)
    while _stamp(wal) == last and time.monotonic() < deadline:
        pass
    os.kill(pid, signal.SIGKILL)
    with lock:
        at_kill = in_flight[0]
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    kill9(pid)
    wait_for(lambda: not any(alive(w) for w in workers), 15)
    return at_kill


def _stamp(path: Path) -> tuple[int, int]:
    try:
        status = path.stat()
    except OSError:
        return (-1, -1)
    return (status.st_size, status.st_mtime_ns)


def download_kill(home: Path, throttle: int = 20_000_000) -> Outcome:
    """kill -9 of the daemon while `lms get` downloads the bundled model from a local Hub (tests/hf_server.py):
    the `lms get` following it fails (no hang), nothing is listed or left in models/ as a finished model, and
    `lms get` again finishes (resuming or restarting) a file identical to the Hub's."""
    from lms.store.catalog import bundled_model_file
    from tests.hf_server import FakeHub

    outcome = Outcome("kill -9 daemon mid-download")
    repo_id, name = "lms-test/Soak-SmolLM2-GGUF", "Soak-SmolLM2-Q4_1.gguf"
    source = bundled_model_file()
    with FakeHub() as hub:
        hub.add_repo(repo_id, {name: source}, tags=["gguf", "text-generation"])
        lms = Lms(home=home, port=free_port(), settings=hub.client_env(home.parent / "hf-home", base={}))
        home.mkdir(parents=True, exist_ok=True)
        target = f"{repo_id}@q4_1"
        hub.throttle_bytes_per_second = throttle
        try:
            lms.run("daemon", "up")
            getter = subprocess.Popen([sys.executable, "-m", "lms", "get", target, "-y"], env=lms.env, cwd=REPO,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
            size = source.stat().st_size

            def halfway():
                jobs = [j for j in lms.control().get("/lms/downloads") if j["status"] == "downloading"]
                return jobs and jobs[0]["downloaded_bytes"] > size * 0.3 and jobs[0]

            job = wait_for(halfway, 120)
            outcome.check("the download was under way", bool(job))
            pid = daemon_pid(lms)
            outcome.figures["killed_at_bytes"] = job["downloaded_bytes"] if job else None
            killed_at = time.monotonic()
            outcome.check("the daemon is gone", kill9(pid))
            try:
                _, errors = getter.communicate(timeout=60)
                outcome.figures["lms_get_exit"] = getter.returncode
                outcome.figures["lms_get_ended_after_s"] = round(time.monotonic() - killed_at, 2)
                outcome.check("the lms get that followed it ends with an error", getter.returncode != 0)
                said = errors.strip().splitlines() or [""]
                outcome.figures["lms_get_said"] = said[-1][:90]
                outcome.check("a message, not a traceback", "Traceback" not in errors)
                if "Traceback" in errors:
                    ours = [line.strip() for line in said if "/lms/" in line]  # where in lms it came from
                    outcome.notes.append("lms get printed a traceback: " + " | ".join([*ours, said[-1]]))
            except subprocess.TimeoutExpired:
                getter.kill()
                outcome.check("the lms get that followed it ends with an error", False)
            finished = [p for p in (home / "models").rglob("*") if p.is_file() and p.name == name]
            outcome.check("no file under models/ has the model's name", not finished)
            listed = [m for m in lms.json("ls") if "soak" in m["modelKey"]]  # this starts the daemon again
            outcome.check("lms ls lists nothing of it", not listed)
            hub.throttle_bytes_per_second = None
            before = hub.bytes_served(repo_id, name)
            again = lms.run("get", target, "-y", "--json", check=False, timeout=300)
            job = json.loads(again.stdout) if again.stdout.strip() else {}
            # the daemon that `lms ls` started again may have finished the journaled job already
            outcome.figures["lms_get_again"] = job.get("status")
            outcome.check("lms get again completes", job.get("status") in ("completed", "already_downloaded"))
            if job.get("status") not in ("completed", "already_downloaded"):
                outcome.notes.append(f"lms get again: {again.returncode} {again.stdout[-300:]} {again.stderr[-300:]}")
            hub.wait_idle()
            outcome.figures["refetched_bytes"] = hub.bytes_served(repo_id, name) - before
            outcome.figures["size"] = size
            files = [p for p in (home / "models").rglob(name)]
            same = len(files) == 1 and _sha256(files[0]) == _sha256(source)
            outcome.check("the file in models/ is the Hub's, byte for byte", same)
            outcome.check("lms ls lists it once", len([m for m in lms.json("ls") if "soak" in m["modelKey"]]) == 1)
        finally:
            hub.throttle_bytes_per_second = None
            lms.stop()
    return outcome


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


# --- disk, db and model files ---------------------------------------------------------------------------------


@contextlib.contextmanager
def small_file_system(where: Path, size_mb: int = 16) -> Iterator[str]:
    """A tmpfs of `size_mb` MiB mounted at `where` (needs root, or CAP_SYS_ADMIN): a file system that really
    fills up. Yields how it was made; raises PermissionError where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(where)],
                                 capture_output=True, text=True)
    except FileNotFoundError as exc:  # no mount command here
        raise PermissionError(f"cannot mount a tmpfs at {where}: {exc}") from exc
    if mounted.returncode != 0:
        raise PermissionError(f"cannot mount a tmpfs at {where}: {mounted.stderr.strip()}")
    try:
        yield f"tmpfs of {size_mb} MiB"
    finally:
        for _ in range(50):  # the daemon may still be closing its files
            if subprocess.run(["umount", str(where)], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        else:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a file in `folder` until its file system is full; returns the file (delete it to free the space)."""
    filler = folder / "filler"
    block = b"\0" * (64 * 1024)
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(block)
                handle.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    with contextlib.suppress(OSError), filler.open("ab") as handle:  # the last partial block too
        while True:
            handle.write(b"\0" * 512)
            handle.flush()
    return filler


def disk_full(base: Path, stored: int = 3) -> Outcome:
    """LMS_HOME on a small tmpfs, filled up, then responses stored (plain and streamed): each fails with a clean
    error (not a 500 internal error, not a stream cut short), the daemon goes on answering, and once space is
    back every response stored before is there unchanged and new ones are stored."""
    outcome = Outcome("disk full while storing a response")
    mount = base / "small-fs"
    with small_file_system(mount) as how:
        outcome.figures["file_system"] = how
        lms = served(mount / "home")
        try:
            acknowledged = store_several(lms, stored, "colour number")
            filler = fill(mount)
            plain = store_response(lms, "Remember this while the disk is full.")
            body = _json_or_none(plain)
            error = (body or {}).get("error") or {}
            outcome.figures["plain"] = f"{plain.status_code} {error.get('code')}: {error.get('message', '')[:70]}"
            outcome.check("a plain request gets a JSON error", plain.status_code >= 400 and bool(error))
            outcome.check("which is not a 500 internal error", plain.status_code != 500
                          and error.get("code") != "internal_error")
            events, ended = [], "complete"
            try:
                with httpx.stream("POST", lms.base_url + "/v1/responses", timeout=60, json={
                        "model": CHAT_MODEL, "input": "And this, streamed.", "max_output_tokens": 8,
                        "store": True, "stream": True}) as response:
                    events.extend(sse_data(response.iter_lines()))
            except httpx.HTTPError as exc:
                ended = type(exc).__name__
            kinds = [json.loads(e).get("type") for e in events if e != "[DONE]"]
            outcome.figures["streamed"] = f"ended {ended}, last events {kinds[-2:]}, [DONE] {'[DONE]' in events}"
            outcome.check("a stream ends with an error event and [DONE]", ended == "complete"
                          and "error" in kinds and bool(events) and events[-1] == "[DONE]")
            outcome.check("the daemon answers while the disk is full",
                          httpx.get(lms.base_url + "/v1/models", timeout=30).status_code == 200)
            filler.unlink()
            found, wrong = stored_intact(lms, acknowledged)
            outcome.figures["stored_intact"] = f"{found}/{len(acknowledged)}"
            outcome.check("every response stored before is there unchanged", not wrong and found == stored)
            integrity, rows, broken = db_check(lms.home / "lms.db")
            outcome.check("the db passes integrity_check", integrity == "ok" and broken == 0)
            after = store_response(lms, "Space is back: remember this.")
            outcome.check("with space back, responses are stored again", after.status_code == 200 and httpx.get(
                f"{lms.base_url}/v1/responses/{after.json()['id']}", timeout=30).status_code == 200)
            if not outcome.ok:
                outcome.notes.append(log_tail(lms))
        finally:
            lms.stop()
    return outcome


def _json_or_none(response: httpx.Response) -> dict | None:
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def corrupt_db(home: Path) -> Outcome:
    """lms.db full of random bytes before the daemon starts: it is moved aside, the daemon starts and serves, and
    responses are stored and read back in a fresh store."""
    outcome = Outcome("corrupt lms.db")
    home.mkdir(parents=True, exist_ok=True)
    (home / "lms.db").write_bytes(random.Random(7).randbytes(64 * 1024))
    lms = Lms(home=home, port=free_port())
    try:
        started = lms.run("server", "start", "-p", str(lms.port), check=False)
        outcome.check("the daemon starts", started.returncode == 0)
        aside = sorted(p.name for p in home.glob("lms.db.corrupt-*"))
        outcome.figures["moved_aside"] = aside[0] if aside else None
        outcome.check("the corrupt file is moved aside", bool(aside))
        stored = store_response(lms, "Remember the number 12.")
        outcome.check("a response is stored and read back", stored.status_code == 200 and httpx.get(
            f"{lms.base_url}/v1/responses/{stored.json()['id']}", timeout=30).json() == stored.json())
        outcome.check("the new db passes integrity_check", db_check(home / "lms.db")[0] == "ok")
    finally:
        lms.stop()
    return outcome


def write_bad_gguf(path: Path) -> Path:
    """A GGUF header that claims 2^62 bytes for its first key: a reader that trusts sizes dies on it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + struct.pack("<Q", 2**62) + b"x" * 100)
    return path


def bad_model(home: Path) -> Outcome:
    """A malformed GGUF among the models: `lms ls` works and lists the good ones, the good model loads and
    answers, and asking for the bad one is a client error (4xx) naming a reason, never a 500."""
    outcome = Outcome("bad model file")
    write_bad_gguf(home / "models" / "lms-test" / "Broken-GGUF" / "Broken-Q4_0.gguf")
    lms = Lms(home=home, port=free_port())
    try:
        start_server(lms)
        listing = lms.run("ls", "--json", check=False)
        models = json.loads(listing.stdout) if listing.returncode == 0 else []
        keys = [m.get("modelKey", "") for m in models]
        outcome.check("lms ls works and lists the good model", CHAT_MODEL in keys)
        broken = [m for m in models if "broken" in m.get("modelKey", "").lower()]
        outcome.figures["bad_model_in_ls"] = json.dumps(broken[0])[:80] if broken else "not listed"
        outcome.check("the good model loads and answers", lms.run("load", CHAT_MODEL, "-y", check=False)
                      .returncode == 0 and chat(lms).status_code == 200)
        asked = chat(lms, model="lms-test/broken")
        error = (_json_or_none(asked) or {}).get("error") or {}
        outcome.figures["asking_for_it"] = f"{asked.status_code} {error.get('code')}"
        outcome.check("asking for the bad one is a 4xx with a message", 400 <= asked.status_code < 500
                      and bool(error.get("message")))
        load = lms.run("load", "lms-test/broken", "-y", check=False)
        outcome.figures["lms_load_it"] = (load.stderr or load.stdout).strip()[:80]
        outcome.check("lms load of it fails with a message, not an internal error", load.returncode != 0
                      and "Internal error" not in load.stderr)
    finally:
        lms.stop()
    return outcome


# --- deadlines ------------------------------------------------------------------------------------------------


class _Drip(BaseHTTPRequestHandler):
    """Answers any GET with a PNG response, one byte a second, headers included, until the client hangs up."""

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        body = b"\x89PNG\r\n\x1a\n" + b"\0" * 4096
        raw = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        self.close_connection = True
        for byte in raw:
            if self.server.stopping.is_set():
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return
            self.server.stopping.wait(1.0)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def slow_drip_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that sends one byte a second; yields an image URL on it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    server.stopping = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/picture.png"
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


def slow_image(lms: Lms, slack: float = 5.0) -> Outcome:
    """An image URL on a server that sends one byte a second (the installation needs the vision model and
    LMS_ALLOWED_FETCH_HOSTS=127.0.0.1): the request ends with a clear 4xx or 504 within the fetch deadline."""
    outcome = Outcome("slow-drip image server")
    lms.run("load", VISION_MODEL, "-y")  # loading is not what the deadline is about
    with slow_drip_server() as url:
        started = time.monotonic()
        answer = httpx.post(lms.base_url + "/v1/chat/completions", timeout=120, json={
            "model": VISION_MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Describe it."}, {"type": "image_url", "image_url": {"url": url}}]}]})
        took = time.monotonic() - started
    error = (_json_or_none(answer) or {}).get("error") or {}
    outcome.figures.update(status=answer.status_code, code=error.get("code"), took_s=round(took, 1),
                           deadline_s=IMAGE_DEADLINE_SECONDS)
    outcome.notes.append(error.get("message", answer.text[:200]))
    outcome.check("a clear 4xx or 504", (400 <= answer.status_code < 500 or answer.status_code == 504)
                  and bool(error.get("message")))
    outcome.check(f"within the deadline (+{slack:g} s)", took <= IMAGE_DEADLINE_SECONDS + slack)
    return outcome


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers; yields an MCP URL on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/mcp"
    finally:
        stopping.set()
        thread.join(timeout=5)
        for connection in [*held, listener]:
            connection.close()


def hanging_mcp(lms: Lms, deadline: float, slack: float = 5.0) -> Outcome:
    """A remote MCP server (tools of type mcp; the daemon needs --allow-remote-mcp and 127.0.0.1 among the allowed
    fetch hosts) that accepts and never answers: the request fails with a clear error within `deadline` (the
    daemon's mcp_connect_timeout_seconds) plus slack, and the daemon goes on answering."""
    outcome = Outcome("hanging MCP server")
    with silent_server() as url:
        started = time.monotonic()
        answer = httpx.post(lms.base_url + "/v1/responses", timeout=120, json={
            "model": CHAT_MODEL, "input": "What's the weather in Paris?", "max_output_tokens": 16,
            "tools": [{"type": "mcp", "server_label": "silent", "server_url": url, "require_approval": "never"}]})
        took = time.monotonic() - started
    error = (_json_or_none(answer) or {}).get("error") or {}
    outcome.figures.update(status=answer.status_code, code=error.get("code"), took_s=round(took, 1),
                           deadline_s=deadline, over_deadline_s=round(took - deadline, 1))
    outcome.notes.append(error.get("message", answer.text[:200]))
    outcome.check("a clear error (4xx or 5xx with a message, not a 500 internal error)",
                  answer.status_code >= 400 and bool(error.get("message")) and error.get("code") != "internal_error")
    outcome.check(f"within the deadline (+{slack:g} s)", took <= deadline + slack)
    outcome.check("the daemon answers afterwards",
                  httpx.get(lms.base_url + "/v1/models", timeout=30).status_code == 200)
    return outcome


# --- load -----------------------------------------------------------------------------------------------------

KINDS = ("chat", "stream", "hang-up", "chain", "models", "abandon")


def _one(client: httpx.Client, kind: str, rng: random.Random) -> int:
    """One mixed request of `kind`; raises AssertionError on a wrong answer. Returns the HTTP calls it made."""
    if kind == "chat":
        answer = client.post("/v1/chat/completions", json={
            "model": CHAT_MODEL, "messages": [{"role": "user", "content": f"Say a word ({rng.random():.4f})."}],
            "max_tokens": 4})
        assert answer.status_code == 200, (kind, answer.status_code, answer.text[:200])
        return 1
    if kind == "stream":
        with client.stream("POST", "/v1/chat/completions", json={
                "model": CHAT_MODEL, "messages": [{"role": "user", "content": "Count to five."}], "max_tokens": 8,
                "stream": True}) as response:
            assert response.status_code == 200, (kind, response.status_code)
            events = list(sse_data(response.iter_lines()))
        assert events and events[-1] == "[DONE]" and not any('"error"' in e for e in events), (kind, events[-2:])
        return 1
    if kind == "hang-up":  # a stream the client leaves midway, on its own connection
        with httpx.stream("POST", str(client.base_url) + "/v1/chat/completions", timeout=client.timeout, json={
                "model": CHAT_MODEL, **LONG_STORY, "max_tokens": 400, "stream": True}) as response:
            assert response.status_code == 200, (kind, response.status_code)
            lines = sse_data(response.iter_lines())
            for _ in range(rng.randint(1, 6)):
                next(lines)
        return 1
    if kind == "chain":
        first = client.post("/v1/responses", json={"model": CHAT_MODEL, "input": "My name is Ada.",
                                                    "max_output_tokens": 4})
        assert first.status_code == 200, (kind, first.status_code, first.text[:200])
        follow = client.post("/v1/responses", json={"model": CHAT_MODEL, "input": "What is my name?",
                                                     "previous_response_id": first.json()["id"],
                                                     "max_output_tokens": 4})
        assert follow.status_code == 200, (kind, follow.status_code, follow.text[:200])
        got = client.get(f"/v1/responses/{follow.json()['id']}")
        assert got.status_code == 200, (kind, got.status_code)
        return 3
    if kind == "models":
        answer = client.get("/v1/models")
        assert answer.status_code == 200 and answer.json()["data"], (kind, answer.status_code)
        return 1
    # abandon: a non-streaming request the client gives up on after a moment
    with contextlib.suppress(httpx.TimeoutException):
        answer = httpx.post(str(client.base_url) + "/v1/chat/completions", timeout=rng.uniform(0.2, 0.8), json={
            "model": CHAT_MODEL, **LONG_STORY, "max_tokens": 400})
        assert answer.status_code == 200, (kind, answer.status_code)
    return 1


def _clients(lms: Lms, clients: int, requests: int, seed: int, errors: list, counts: dict) -> None:
    """Run the clients; wrong answers go to `errors`, and `counts` gets each kind's count, the HTTP calls made and
    the slowest operation's seconds (a loaded machine queues requests long: the clients wait up to 300 s)."""
    lock = threading.Lock()

    def client_loop(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        kinds = [KINDS[i % len(KINDS)] for i in range(requests)]
        rng.shuffle(kinds)
        with httpx.Client(base_url=lms.base_url, timeout=300) as client:
            for kind in kinds:
                began = time.monotonic()
                try:
                    calls = _one(client, kind, rng)
                except (AssertionError, httpx.HTTPError, StopIteration, ValueError) as exc:
                    with lock:
                        errors.append(f"client {number} {kind}: {type(exc).__name__} {str(exc)[:200]}")
                    calls = 1
                with lock:
                    counts[kind] = counts.get(kind, 0) + 1
                    counts["http_calls"] = counts.get("http_calls", 0) + calls
                    counts["slowest_s"] = max(counts.get("slowest_s", 0), round(time.monotonic() - began, 1))

    threads = [threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def mixed_load(lms: Lms, clients: int = 8, requests: int = 200, max_growth: float = 0.10, seed: int = 15,
               warmup: int = len(KINDS)) -> Outcome:
    """`clients` threads, each sending `requests` mixed requests in a shuffled order (chats, full streams, streams
    hung up midway, response chains, model lists, requests abandoned): 0 errors, and the daemon's plus its
    workers' resident memory, idle after the run, within `max_growth` of where it was, idle, after a warm-up of
    `warmup` requests per client (net of the workers' prefix caches, which fill up to their bound by design; the
    raw ratio is printed too)."""
    outcome = Outcome(f"{clients} clients x {requests} mixed requests")
    pid = daemon_pid(lms)
    warm_errors: list[str] = []
    _clients(lms, clients, warmup, seed + 1, warm_errors, {})  # caches, pools and slots allocated once
    wait_for(lambda: idle(lms), 60)
    time.sleep(1.0)
    start_rss, workers_before = family_rss(pid), {m["pid"] for m in loaded(lms).values()}
    daemon_start, prefix_start = psutil.Process(pid).memory_info().rss, _prefix_cache(lms)
    errors: list[str] = []
    counts: dict[str, int] = {}
    started = time.monotonic()
    _clients(lms, clients, requests, seed, errors, counts)
    took = time.monotonic() - started
    settled = wait_for(lambda: idle(lms), 60)
    time.sleep(1.0)
    end_rss, daemon_end = family_rss(pid), psutil.Process(pid).memory_info().rss
    prefix_end = _prefix_cache(lms)
    # A worker keeps finished sequences for prefix reuse, up to one context's KV (its memory estimate counts it):
    # that cache filling up is growth by design, so the target is held net of it.
    ratio, net_ratio = end_rss / start_rss, (end_rss - prefix_end) / (start_rss - prefix_start)
    outcome.figures.update(requests=clients * requests, http_calls=counts.get("http_calls", 0),
                           errors=len(errors) + len(warm_errors), seconds=round(took, 1),
                           slowest_op_s=counts.get("slowest_s"),
                           rss_start_mb=round(start_rss / 1e6, 1), rss_end_mb=round(end_rss / 1e6, 1),
                           rss_ratio=round(ratio, 3), daemon_rss_mb=f"{daemon_start / 1e6:.1f}->{daemon_end / 1e6:.1f}",
                           workers_rss_mb=f"{(start_rss - daemon_start) / 1e6:.1f}->{(end_rss - daemon_end) / 1e6:.1f}",
                           prefix_cache_mb=f"{prefix_start / 1e6:.1f}->{prefix_end / 1e6:.1f}",
                           rss_ratio_net_of_prefix_cache=round(net_ratio, 3))
    outcome.notes += (warm_errors + errors)[:10]
    outcome.check("0 errors", not errors and not warm_errors)
    outcome.check("every model idle afterwards (nothing queued)", bool(settled))
    outcome.check("the same workers (none died)", {m["pid"] for m in loaded(lms).values()} == workers_before)
    outcome.check(f"memory within {max_growth:.0%} of the start (net of the workers' prefix cache)",
                  net_ratio <= 1 + max_growth)
    return outcome


def _prefix_cache(lms: Lms) -> int:
    """Bytes the loaded models' workers hold in their prefix caches, as they last reported."""
    return sum(m.get("prefixCacheBytes") or 0 for m in loaded(lms).values())


async def _hold_streams(port: int, count: int, opened: threading.Event, release: threading.Event,
                        report: dict) -> None:
    """Open `count` streaming chat requests on raw sockets and keep reading them until `release`."""
    body = json.dumps({"model": CHAT_MODEL, **LONG_STORY, "max_tokens": 4000, "stream": True}).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    report.update(connected=0, answered=0, refused_503=0, closed_by_server=0)

    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        report["connected"] += 1
        writer.write(request)
        try:
            await writer.drain()
            status = await reader.readline()
            if status.startswith(b"HTTP/1.1 200"):
                report["answered"] += 1
            elif status.startswith(b"HTTP/1.1 503"):
                report["refused_503"] += 1  # beyond the model's bounded queue (max_queued_requests)
            while not release.is_set():
                if not await reader.read(4096):
                    report["closed_by_server"] += 1
                    return
        except (OSError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    while report["connected"] < count and not all(t.done() for t in tasks):
        await asyncio.sleep(0.05)
    opened.set()
    while not release.is_set():
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def open_streams(lms: Lms, streams: int = 200, probes: int = 100, p99_target: float = 1.0,
                 settle: float = 2.0) -> Outcome:
    """`streams` streaming chats held open (4 generate, the rest wait in the model's queue: the daemon's
    max_queued_requests must leave room for them) while GET /v1/models is
    asked `probes` times: p50 / p99 / max of its latency, the p99 against `p99_target`; afterwards every stream is
    closed and the model must drain to idle and answer again."""
    outcome = Outcome(f"{streams} open streams, /v1/models latency")
    opened, release, report = threading.Event(), threading.Event(), {}
    holder = threading.Thread(target=asyncio.run, args=(_hold_streams(lms.port, streams, opened, release, report),),
                              daemon=True)
    holder.start()
    opened.wait(120)
    time.sleep(settle)  # the daemon has read every request and queued it
    latencies, failures = [], 0
    with httpx.Client(base_url=lms.base_url, timeout=30) as client:
        for _ in range(probes):
            began = time.perf_counter()
            try:
                ok = client.get("/v1/models").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - began)
            failures += not ok
            time.sleep(0.02)
    in_queue = loaded(lms).get(CHAT_MODEL, {}).get("queued")
    still_open = report.get("connected", 0) - report.get("closed_by_server", 0)
    release.set()
    holder.join(60)
    drained = wait_for(lambda: idle(lms), 120)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    outcome.figures.update(streams=streams, connected=report.get("connected"), streaming=report.get("answered"),
                           refused_503=report.get("refused_503"), open_while_probing=still_open,
                           queued_in_model=in_queue, probes=probes, failed_probes=failures,
                           p50_ms=round(p50 * 1000, 1), p99_ms=round(p99 * 1000, 1),
                           max_ms=round(max(latencies) * 1000, 1))
    outcome.check("every stream connected and stayed open", report.get("connected") == streams
                  and still_open == streams)
    outcome.check("/v1/models answered every probe", failures == 0)
    outcome.check(f"p99 under {p99_target:g} s", p99 < p99_target)
    outcome.check("the model drains to idle after the streams close", bool(drained))
    outcome.check("and answers again", chat(lms).status_code == 200)
    return outcome
