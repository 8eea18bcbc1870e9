"""Shared state in PostgreSQL (the `database_url` setting), against a real server these tests start: the response
store's chains, retention and migrations on it; API tokens and the download journal; and two daemons sharing one
database that continue each other's `previous_response_id` chains and accept and refuse each other's tokens. A
database that cannot be reached or refuses the password stops the daemon with a clear error, and the password
appears nowhere.

The server runs from a temporary folder as the `postgres` user when the tests run as root (it refuses root), on
a free port with its socket in that folder, and is stopped by its PID."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import CHAT_MODEL, Lms, free_port, wait_for

PASSWORD = "s3cret-Pg-Pass"  # looked for, and never to be found, in errors, logs and status output


def _postgres_bin(name: str) -> str | None:
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)


INITDB, PG_CTL = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
pytestmark = pytest.mark.skipif(INITDB is None or PG_CTL is None, reason="PostgreSQL (initdb) is not installed")


class Postgres:
    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://lms:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg  # the `postgres` extra, in `dev`: missing is an install error, not a skip

        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="module")
def postgres():
    folder = Path(tempfile.mkdtemp(prefix="lms-pg-"))  # short: the unix socket lives in it
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    (folder / "sock").mkdir()
    (folder / "pw").write_text(PASSWORD + "\n")
    if as_postgres:
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "sock", "postgres")
        shutil.chown(folder / "pw", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run([*as_postgres, INITDB, "-D", str(data), "-U", "lms", "-A", "scram-sha-256",
                    f"--pwfile={folder / 'pw'}", "-E", "UTF8", "--no-locale", "--no-sync"], check=True,
                   capture_output=True, timeout=120, cwd=folder)
    options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {folder / 'sock'} -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off")
    subprocess.run([*as_postgres, PG_CTL, "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w",
                    "-t", "60", "start"], check=True, capture_output=True, timeout=90, cwd=folder)
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        yield Postgres(folder, port)
    finally:
        subprocess.run([*as_postgres, PG_CTL, "-D", str(data), "stop", "-m", "fast", "-w", "-t", "30"],
                       capture_output=True, timeout=60, cwd=folder)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 0)
            os.kill(pid, signal.SIGKILL)  # pg_ctl could not stop it: this server, by its PID
        shutil.rmtree(folder, ignore_errors=True)


# --- the stores on PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture
def database(postgres, request):
    """A fresh database per test; `connect()` opens one more connection to it (another daemon)."""
    from lms import db

    url = postgres.create_database(f"unit_{request.node.name[:40].lower()}")
    opened = []

    def connect():
        opened.append(db.connect(url))
        return opened[-1]

    yield connect
    for each in opened:
        each.close()


def test_the_response_store_migrates_and_keeps_chains_on_postgres(database):
    from lms.conversation.store import MIGRATIONS, ResponseStore
    from tests.test_unit_response_store import next_turn

    first = database()
    with first.transaction():  # a database at version 1, as an older lms left it
        first.migrate("responses", MIGRATIONS[:1])
        old = next_turn(0, None)
        first.execute("INSERT INTO responses (id, created_at, response, input_items, context) VALUES (?, ?, ?, ?, ?)",
                      ("resp_0", 1_000, _dumps(old.response), _dumps(old.input_items), _dumps(old.context)))
    store = ResponseStore(Path("/nonexistent/unused.db"), max_age_seconds=10**12, max_count=6, database=first)
    assert first.execute("SELECT version FROM lms_schema WHERE component = 'responses'").fetchone()[0] == 2
    assert store.get("resp_0") == old

    made = [old]
    for number in range(1, 10):
        made.append(next_turn(number, made[-1]))
        store.put(made[-1])
    for original in made:
        assert store.get(original.response["id"]) == original  # the whole conversation, rebuilt by the CTE
    assert first.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'responses' AND "
                         "column_name = 'created_at'").fetchone()[0] == "double precision"  # not float4's 7 digits
    page, more = store.list_input_items("resp_9")
    assert [item["id"] for item in page] == ["msg_9"] and not more

    assert store.delete("resp_4") and store.get("resp_4") is None
    assert store.get("resp_5") == made[5] and store.get("resp_9") == made[9]  # folded, still whole

    assert store.prune() == 3  # the count cap (6): the 3 oldest go, and what continues them is folded
    assert [store.get(f"resp_{n}") is not None for n in range(10)] == [False] * 3 + [True, False] + [True] * 5
    assert store.get("resp_3") == made[3] and store.get("resp_5") == made[5]
    assert store.total_bytes == store.stored_bytes()

    # a second daemon (its own connection) continues the chain, and the first one reads it back whole
    other = ResponseStore(Path("/nonexistent/unused.db"), max_age_seconds=10**12, database=database())
    following = next_turn(10, made[-1])
    other.put(following)
    assert store.get("resp_10") == following
    assert store.db.execute("SELECT previous_id FROM responses WHERE id = 'resp_10'").fetchone()[0] == "resp_9"
    replacement = next_turn(10, made[-1], words=3)
    store.put(replacement)  # a replaced response comes back as the newest row
    assert other.get("resp_10") == replacement


def test_concurrent_writers_and_the_byte_cap_on_postgres(database):
    from lms.conversation.store import ResponseStore
    from tests.test_unit_response_store import next_turn

    one_turn = len(_dumps(next_turn(0, None).response)) * 2
    stores = [ResponseStore(Path("/unused"), max_age_seconds=10**12, max_bytes=200 * one_turn, database=database())
              for _ in range(2)]

    def writer(index: int):
        previous = None
        for number in range(index * 100, index * 100 + 30):
            previous = next_turn(number, previous)
            stores[index].put(previous)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stores[1].get("resp_29").context == stores[0].get("resp_29").context
    assert len(stores[0].get("resp_129").context) == 30 * 2 - 1  # 30 questions and 29 answers before it

    newest = stores[0].get("resp_129")
    small = ResponseStore(Path("/unused"), max_age_seconds=10**12, max_bytes=5 * one_turn, database=database())
    kept = small.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    assert kept < 10 and small.get("resp_129") == newest  # the newest stays, its conversation folded into it


def test_tokens_are_shared_and_revocation_is_seen_at_once(database):
    from lms.errors import LmsError
    from lms.tokens import Authenticator, TokenStore

    here, there = TokenStore(database=database()), TokenStore(database=database())
    assert not here.any()
    token, secret = here.create("app")
    admin, admin_secret = there.create("ops", "admin")
    assert there.verify(secret).name == "app" and Authenticator(there).caller(admin_secret).admin
    assert [t.name for t in here.tokens()] == ["app", "ops"] == [t.name for t in there.tokens()]
    with pytest.raises(LmsError) as duplicate:
        there.create("app")
    assert duplicate.value.code == "token_exists"
    assert here.tokens()[0].last_used is not None  # recorded by the other store's check
    there.revoke(f"sk-lm-{token.identifier}")
    assert here.verify(secret) is None and here.verify(admin_secret).name == "ops"
    with pytest.raises(LmsError):
        here.revoke("app")


def test_the_download_journal_is_shared_and_each_daemon_resumes_its_own(database):
    from lms.store.downloads import DatabaseJournal, DownloadManager, Job
    from lms.store.hub import HubFile

    a = DownloadManager(database=database())
    a.journal = DatabaseJournal(a.journal.db, owner="host-a:/home/a")
    job = Job("job_0123456789", "org/Model-GGUF", "c0ffee", "Q4_1", [HubFile("model.gguf", 1234, "ab" * 32)],
              status="completed", completed_at=time.time(), done_bytes=1234)
    a.jobs[job.job_id] = job
    a._save(job)

    b = DownloadManager(database=database())
    b.journal = DatabaseJournal(b.journal.db, owner="host-b:/home/b")
    b.start()
    assert b.jobs == {}  # not its job: never resumed by another daemon
    seen = b.get(job.job_id)  # but its status is answered
    assert seen.status == "completed" and seen.files == job.files and seen.total_bytes == 1234

    restarted = DownloadManager(database=database())
    restarted.journal = DatabaseJournal(restarted.journal.db, owner="host-a:/home/a")
    restarted.start()
    assert list(restarted.jobs) == [job.job_id] and restarted.jobs[job.job_id].status == "completed"


def test_a_bad_url_is_a_clear_error_without_the_password(postgres):
    from lms import db

    started = time.monotonic()
    for url, expected in [(postgres.url(password="wrong-" + PASSWORD), "password authentication failed"),
                          (f"postgresql://lms:{PASSWORD}@127.0.0.1:{free_port()}/lms", "Cannot connect"),
                          (f"mysql://lms:{PASSWORD}@127.0.0.1/lms", "not a mysql:// URL")]:
        with pytest.raises(db.DatabaseError) as refused:
            db.connect(url)
        assert expected in refused.value.message and PASSWORD not in refused.value.message
        assert "lms:***@127.0.0.1" in refused.value.message or url.startswith("mysql")
    assert time.monotonic() - started < 10
    assert db.mask("host=db user=lms password=hunter22 dbname=x") == "host=db user=lms password=*** dbname=x"


def test_a_lost_connection_fails_one_statement_and_is_made_anew(database):
    from lms import db

    daemon, admin = database(), database()
    backend = daemon.execute("SELECT pg_backend_pid()").fetchone()[0]
    admin.execute("SELECT pg_terminate_backend(?)", (backend,))
    with pytest.raises(db.DatabaseError) as lost:
        daemon.execute("SELECT 1")
    assert lost.value.code == "database_unavailable" and PASSWORD not in lost.value.message
    assert daemon.execute("SELECT 1").fetchone()[0] == 1  # reconnected
    assert daemon.execute("SELECT pg_backend_pid()").fetchone()[0] != backend


def _dumps(value) -> str:
    import json

    return json.dumps(value)


# --- two daemons, one database ------------------------------------------------------------------------------


def _post(lms: Lms, path: str, body: dict, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(lms.base_url + path, json=body, headers=headers, timeout=120)


def _get(lms: Lms, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(lms.base_url + path, headers=headers, timeout=60)


@pytest.fixture
def hub():
    from lms.store.catalog import bundled_model_file
    from tests.hf_server import FakeHub

    with FakeHub() as fake:
        fake.add_repo("lms-test/Shared-SmolLM2-GGUF", {"Shared-SmolLM2-Q4_1.gguf": bundled_model_file()},
                      tags=["gguf", "text-generation"])
        yield fake


def test_two_daemons_share_chains_tokens_and_the_download_journal(postgres, tmp_path, hub):
    url = postgres.create_database("fronts")
    fronts = [Lms(home=tmp_path / name / "home", port=free_port(),
                  settings={**hub.client_env(tmp_path / "hf-home", base={}), "LMS_DATABASE_URL": url})
              for name in ("a", "b")]
    a, b = fronts
    try:
        for front in fronts:
            front.home.mkdir(parents=True)
            front.run("server", "start", "-p", str(front.port))

        # a conversation begun on A continues on B: B rebuilds it from the shared store
        first = _post(a, "/v1/responses", {"model": CHAT_MODEL, "store": True, "temperature": 0,
                                           "max_output_tokens": 12, "input": "My name is Alice. Say hello."})
        assert first.status_code == 200, first.text
        first = first.json()
        second = _post(b, "/v1/responses", {"model": CHAT_MODEL, "previous_response_id": first["id"],
                                            "temperature": 0, "max_output_tokens": 12, "input": "What is my name?"})
        assert second.status_code == 200, second.text
        second = second.json()
        assert second["previous_response_id"] == first["id"]
        assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"] + first["usage"]["output_tokens"]
        assert _get(a, f"/v1/responses/{second['id']}").json()["id"] == second["id"]  # and A sees B's turn
        items = _get(a, f"/v1/responses/{second['id']}/input_items").json()["data"]
        assert [item["content"][0]["text"] for item in items] == ["What is my name?"]
        third = _post(a, "/v1/responses", {"model": CHAT_MODEL, "previous_response_id": second["id"],
                                           "temperature": 0, "max_output_tokens": 4, "input": "Thanks."}).json()
        assert third["usage"]["input_tokens"] > second["usage"]["input_tokens"]

        # a download run by A: its journal row answers its status on B too
        started = _post(a, "/api/v1/models/download", {"model": "lms-test/Shared-SmolLM2-GGUF",
                                                      "quantization": "q4_1"}).json()
        job_id = started["job_id"]
        wait_for(lambda: _get(a, f"/api/v1/models/download/status/{job_id}").json()["status"] == "completed")
        on_b = _get(b, f"/api/v1/models/download/status/{job_id}").json()
        assert on_b["status"] == "completed" and on_b["downloaded_bytes"] == on_b["total_size_bytes"] > 0

        # tokens made with A's configuration guard B at its next request; revoked through B, A refuses it
        app = a.json("server", "token", "create", "app")["token"]
        ops = a.json("server", "token", "create", "ops", "--scope", "admin")["token"]
        assert not (a.home / ".internal" / "api-tokens.json").exists()
        assert _get(b, "/v1/models").status_code == 401
        assert _get(b, "/v1/models", app).status_code == 200
        assert [t["name"] for t in b.json("server", "token", "ls")] == ["app", "ops"]
        b.run("server", "token", "revoke", "app")
        refused = _get(a, "/v1/models", app)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert _get(a, "/v1/models", ops).status_code == 200

        # A restarted: its journal and the conversations come back from the database, not from its home
        a.stop()
        a.run("server", "start", "-p", str(a.port))
        assert _get(a, f"/api/v1/models/download/status/{job_id}", ops).json()["status"] == "completed"
        assert not (a.home / ".internal" / "downloads" / "jobs").exists()
        assert _get(a, f"/v1/responses/{third['id']}", ops).json()["previous_response_id"] == second["id"]
        assert not (a.home / "lms.db").exists() and not (b.home / "lms.db").exists()

        status = a.run("server", "status", "--json").stdout + a.run("status").stdout
        assert PASSWORD not in status
    finally:
        for front in fronts:
            front.stop()
    for front in fronts:  # the password is in no log, no state file
        for path in front.home.rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000:
                assert PASSWORD.encode() not in path.read_bytes(), path


def test_a_daemon_whose_database_refuses_does_not_start_and_says_why(postgres, tmp_path):
    lms = Lms(home=tmp_path / "home", port=free_port(),
              settings={"LMS_DATABASE_URL": postgres.url("postgres", password="wrong-" + PASSWORD)})
    lms.home.mkdir(parents=True)
    started = time.monotonic()
    result = lms.run("server", "start", "-p", str(lms.port), check=False, timeout=60)
    assert result.returncode != 0 and time.monotonic() - started < 30
    assert "password authentication failed" in result.stderr and "lms:***@127.0.0.1" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    lms.settings["LMS_DATABASE_URL"] = f"postgresql://lms:{PASSWORD}@127.0.0.1:{free_port()}/lms"
    result = lms.run("server", "start", "-p", str(lms.port), check=False, timeout=60)
    assert result.returncode != 0 and "Cannot connect to the database" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    for path in lms.home.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
