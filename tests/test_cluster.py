"""Models on a Ray Serve cluster, end to end: a real Ray head (and a second node) started here and stopped by PID,
`lms cluster connect`, `lms load --replicas 2`, requests on every surface served by the replicas (our own llama.cpp
engine inside them), `lms ps` and `lms cluster status` naming the replicas and their nodes, unload tearing the
application down, a clear error without a cluster, and a cluster that went away never hanging the daemon."""

from __future__ import annotations

import json
import signal
import time

import httpx
import openai
import pytest

from tests.conftest import CHAT_MODEL, Lms, follow_completion_stream, free_port
from tools.ray_node import RayNode, wait_for_nodes

pytest.importorskip("ray", reason="the cluster extra (ray[serve]) is not installed")


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and a second node (2 logical CPUs each): the address and the nodes, head first."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = RayNode.head(port)
    nodes = [head]
    try:
        wait_for_nodes(address, 1)
        nodes.append(RayNode("--address", address, "--num-cpus", "2"))
        wait_for_nodes(address, 2)
        yield address, nodes
    finally:
        for node in reversed(nodes):
            node.stop()


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    return ray_cluster[0]


@pytest.fixture(scope="module")
def front(cluster, tmp_path_factory):
    # Autoscaling gives replicas back after 3 s of less load instead of 30 s, so a test sees the downscale.
    lms = Lms(home=tmp_path_factory.mktemp("cluster") / "home", port=free_port(),
              settings={"LMS_CLUSTER_DOWNSCALE_DELAY": "3"})
    lms.home.mkdir(parents=True)
    lms.run("server", "start", "-p", str(lms.port))
    yield lms
    lms.stop()


def test_without_a_cluster_replicas_is_a_clear_error(front):
    refused = front.run("load", CHAT_MODEL, "--replicas", "2", "-y", check=False)
    assert refused.returncode != 0 and "lms cluster connect" in refused.stderr + refused.stdout
    assert front.json("cluster", "status") == {"connected": False, "address": None}


def test_a_model_on_two_replicas_serves_every_surface(cluster, front):
    connected = front.json("cluster", "connect", cluster)
    assert connected["connected"] and len(connected["nodes"]) == 2
    assert json.loads((front.home / "settings.json").read_text())["cluster_address"] == cluster
    front.run("load", CHAT_MODEL, "--identifier", "on-cluster", "--replicas", "2", "-c", "2048", "-y", timeout=300)
    listed = {m["identifier"]: m for m in front.json("ps")}["on-cluster"]
    assert listed["location"] == "cluster" and listed["clusterStatus"] == "RUNNING"
    assert len(listed["replicas"]) == 2 and all(r["status"] == "ALIVE" and r["node"] for r in listed["replicas"])

    client = openai.OpenAI(base_url=front.base_url + "/v1", api_key="none")
    local = httpx.post(front.base_url + "/v1/chat/completions", timeout=120, json={
        "model": CHAT_MODEL, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12,
        "temperature": 0}).json()  # JIT-loaded on this machine: the same engine, the same text
    remote = client.chat.completions.create(model="on-cluster", max_tokens=12, temperature=0,
                                            messages=[{"role": "user", "content": "Name a colour."}])
    assert remote.choices[0].message.content == local["choices"][0]["message"]["content"]
    streamed = client.chat.completions.create(model="on-cluster", stream=True, max_tokens=12, temperature=0,
                                              messages=[{"role": "user", "content": "Name a colour."}])
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == remote.choices[0].message.content

    first = client.responses.create(model="on-cluster", input="My name is Ada.", max_output_tokens=8)
    second = client.responses.create(model="on-cluster", input="What is my name?", max_output_tokens=8,
                                      previous_response_id=first.id)
    assert second.usage.input_tokens > first.usage.input_tokens
    for n in range(4):  # prefix affinity: each follow-up goes to the replica that holds its conversation
        opening = client.responses.create(model="on-cluster", max_output_tokens=6,
                                          input=f"Conversation {n}: my name is Ada number {n}. Remember it.")
        follow_up = client.responses.create(model="on-cluster", input="What is my name?", max_output_tokens=6,
                                            previous_response_id=opening.id)
        assert follow_up.usage.input_tokens_details.cached_tokens >= opening.usage.input_tokens // 2
    anthropic = httpx.post(front.base_url + "/v1/messages", timeout=120, json={
        "model": "on-cluster", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}).json()
    assert anthropic["type"] == "message" and anthropic["usage"]["output_tokens"] > 0
    ollama = httpx.post(front.base_url + "/api/chat", timeout=120, json={
        "model": "on-cluster", "stream": False, "messages": [{"role": "user", "content": "Hi"}],
        "options": {"num_predict": 8}}).json()
    assert ollama["done"] and ollama["eval_count"] > 0
    import lmstudio  # LM Studio's SDK, over its WebSocket protocol

    with lmstudio.Client(f"127.0.0.1:{front.port}") as sdk:
        reply = sdk.llm.model("on-cluster").respond("Hi", config={"maxTokens": 8})
    assert reply.stats.predicted_tokens_count >= 1 and reply.content
    pieces = httpx.post(front.base_url + "/tokenize", timeout=120, json={
        "model": "on-cluster", "content": "Hello world", "add_special": False, "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == "Hello world"
    text = httpx.post(front.base_url + "/detokenize", timeout=120, json={
        "model": "on-cluster", "tokens": [p["id"] for p in pieces]}).json()["content"]
    assert text == "Hello world"

    status = front.json("cluster", "status")
    assert status["reachable"] and status["models"] == ["on-cluster"]
    assert sum(len(node["replicas"]) for node in status["nodes"]) == 2
    assert status["applications"]["lms-on-cluster"]["status"] == "RUNNING"

    front.run("unload", "on-cluster")
    assert "on-cluster" not in [m["identifier"] for m in front.json("ps")]
    assert "lms-on-cluster" not in front.json("cluster", "status")["applications"]


def test_disconnect_keeps_local_models_and_forgets_the_cluster(cluster, front):
    front.json("cluster", "connect", cluster)
    front.run("load", CHAT_MODEL, "--identifier", "here", "-c", "1024", "-y")
    front.run("load", CHAT_MODEL, "--identifier", "there", "--replicas", "1", "-c", "1024", "-y", timeout=300)
    result = front.json("cluster", "disconnect")
    assert result == {"connected": False, "unloaded": ["there"]}
    assert "here" in [m["identifier"] for m in front.json("ps")]
    assert "cluster_address" not in json.loads((front.home / "settings.json").read_text())


def test_an_unreachable_cluster_is_reported_not_waited_for(front):
    started = time.monotonic()
    refused = front.run("cluster", "connect", f"127.0.0.1:{free_port()}", check=False, timeout=120)
    assert refused.returncode != 0 and "cannot be reached" in refused.stderr + refused.stdout
    assert time.monotonic() - started < 90


def replicas_of(front: Lms, identifier: str) -> list[dict]:
    return {m["identifier"]: m for m in front.json("ps")}[identifier]["replicas"]


def replica_pids(front: Lms, identifier: str) -> list[int]:
    return [r["pid"] for r in replicas_of(front, identifier) if r["status"] == "ALIVE"]


def test_a_killed_replica_fails_only_the_stream_it_was_serving(cluster, front):
    """kill -9 of the replica mid-stream ends that stream with a clean error; requests that had not started
    streaming are retried on a live replica, and Serve replaces the dead one."""
    import os

    front.json("cluster", "connect", cluster)
    front.run("load", CHAT_MODEL, "--identifier", "fragile", "--replicas", "2", "-c", "1024", "-y", timeout=300)
    try:
        body = {"model": "fragile", "stream": True, "max_tokens": 400, "temperature": 0.8,
                "messages": [{"role": "user", "content": "Write a long story about the sea."}]}
        lines = []
        with httpx.stream("POST", front.base_url + "/v1/chat/completions", json=body, timeout=120) as response:
            for line in response.iter_lines():
                lines.append(line)
                if len(lines) == 6:  # it is streaming: kill both replicas, whichever serves it
                    for pid in replica_pids(front, "fragile"):
                        os.kill(pid, signal.SIGKILL)
        assert any('"error"' in line and "replica" in line for line in lines)  # said, not hung
        deadline = time.monotonic() + 120
        while len(replica_pids(front, "fragile")) < 2 and time.monotonic() < deadline:
            time.sleep(1)  # Serve starts new replicas
        survivors = replica_pids(front, "fragile")
        os.kill(survivors[0], signal.SIGKILL)  # one replica gone: requests that have sent nothing are retried
        for _ in range(4):
            answer = httpx.post(front.base_url + "/v1/chat/completions", timeout=120, json={
                "model": "fragile", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
            assert answer.status_code == 200, answer.text
    finally:
        front.run("unload", "fragile", check=False)


def test_replicas_scale_up_under_load_and_back_down_after_it(cluster, front):
    """1 -> up to 3 replicas while requests queue (3 logical CPUs of the 4 the two nodes declare), and back to 1
    once the load stops (the front's LMS_CLUSTER_DOWNSCALE_DELAY is 3 s)."""
    from concurrent.futures import ThreadPoolExecutor

    front.json("cluster", "connect", cluster)
    front.run("load", CHAT_MODEL, "--identifier", "elastic", "--replicas", "1", "--max-replicas", "3",
              "--parallel", "1", "-c", "1024", "-y", timeout=300)
    try:
        listed = {m["identifier"]: m for m in front.json("ps")}["elastic"]
        assert (listed["minReplicas"], listed["maxReplicas"], len(listed["replicas"])) == (1, 3, 1)

        def long_answer(n: int) -> str:
            answer = httpx.post(front.base_url + "/v1/chat/completions", timeout=600, json={
                "model": "elastic", "max_tokens": 100, "temperature": 0.8, "messages": [
                    {"role": "user", "content": f"Story {n}: write a long story about the sea."}]})
            return "ok" if answer.status_code == 200 else f"{answer.status_code} {answer.text[:300]}"

        most, seen = 1, []
        started = time.monotonic()
        with ThreadPoolExecutor(10) as pool:
            running = [pool.submit(long_answer, n) for n in range(10)]
            while most < 3 and time.monotonic() - started < 180 and not all(f.done() for f in running):
                time.sleep(2)
                alive = len(replica_pids(front, "elastic"))
                seen.append((round(time.monotonic() - started), alive))
                most = max(most, alive)
            assert [f.result() for f in running] == ["ok"] * 10
        print(f"replicas seen under load: {seen} (most {most}, {time.monotonic() - started:.0f} s)")
        assert most == 3, seen  # Serve added replicas while requests queued, up to max_replicas
        stopped = time.monotonic()
        while len(replicas_of(front, "elastic")) > 1 and time.monotonic() - stopped < 120:
            time.sleep(2)
        print(f"back to min replicas in {time.monotonic() - stopped:.0f} s")
        assert len(replicas_of(front, "elastic")) == 1  # the load stopped: down to min_replicas again
        answer = httpx.post(front.base_url + "/v1/chat/completions", timeout=120, json={
            "model": "elastic", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
        assert answer.status_code == 200
    finally:
        front.run("unload", "elastic", check=False)


# --- a node that does not see the front's models folder downloads the model itself ---------------------------------

HUB_REPO = "lmstudio-community/SmolLM2-135M-Instruct-GGUF"
HUB_FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
HUB_KEY = "lmstudio-community/smollm2-135m-instruct"


def test_a_node_without_the_models_folder_downloads_the_model_from_the_hub(cluster, tmp_path):
    """The front fetched the model with `lms get` (from the local Hub); a third node, with its own LMS_HOME and
    LMS_CLUSTER_NODE_MODELS=own (it never reads the front's folder), is the only one with the Ray resource the
    front's replicas ask for (LMS_CLUSTER_REPLICA_RESOURCES): its replica downloads the file into its own models
    folder, sha256-checked, and serves from there."""
    import hashlib
    import os

    from lms.store.catalog import bundled_model_file
    from tests.hf_server import FakeHub

    model = bundled_model_file()
    with FakeHub() as hub:
        hub.add_repo(HUB_REPO, {HUB_FILE: model}, tags=["gguf", "text-generation"])
        node_home = tmp_path / "node-home"
        node_env = {**hub.client_env(tmp_path / "node-hf"), "LMS_HOME": str(node_home),
                    "LMS_CLUSTER_NODE_MODELS": "own"}
        node = RayNode("--address", cluster, "--num-cpus", "1", "--resources", '{"lms_download_node": 1}',
                       env=node_env)
        there = Lms(home=tmp_path / "front-home", port=free_port(), settings={
            **hub.client_env(tmp_path / "front-hf", base={}),
            "LMS_CLUSTER_REPLICA_RESOURCES": '{"lms_download_node": 1}'})
        there.home.mkdir(parents=True)
        try:
            wait_for_nodes(cluster, 3)
            fetched = json.loads(there.run("get", f"{HUB_REPO}@q4_1", "--json", timeout=300).stdout)
            assert fetched["status"] == "completed"
            assert (there.home / "models" / HUB_REPO / HUB_FILE).is_file()
            there.run("server", "start", "-p", str(there.port))
            there.json("cluster", "connect", cluster)
            there.run("load", HUB_KEY, "--identifier", "fetched", "--replicas", "1", "-c", "1024", "-y",
                      timeout=300)
            [replica] = replicas_of(there, "fetched")
            assert node.owns(replica["pid"])  # placed on the node with the resource
            on_node = node_home / "models" / HUB_REPO / HUB_FILE
            assert hashlib.sha256(on_node.read_bytes()).hexdigest() == hashlib.sha256(model.read_bytes()).hexdigest()
            assert hub.bytes_served(HUB_REPO, HUB_FILE) == 2 * os.path.getsize(model)  # the front's, the node's
            assert not list(node_home.rglob("*.part"))
            answer = httpx.post(there.base_url + "/v1/chat/completions", timeout=120, json={
                "model": "fetched", "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": "Name a colour."}]})
            assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
            there.run("unload", "fetched")

            # A model lms did not download (the bundled one, linked into the front's folder): refused, in words.
            refused = there.run("load", CHAT_MODEL, "--identifier", "nowhere", "--replicas", "1", "-c", "1024", "-y",
                                check=False, timeout=300)
            said = refused.stdout + refused.stderr
            print(f"refused: {said.strip()}")
            assert refused.returncode != 0 and "is not on node" in said and "lms get" in said
            assert str(there.home / "models") in said and str(node_home / "models") in said  # both places named
            assert "nowhere" not in [m["identifier"] for m in there.json("ps")]
        finally:
            there.stop()
            node.stop()


# --- a node lost while it serves ------------------------------------------------------------------------------------

def routed_to(prompts: list[str], replicas: list[dict]) -> dict[str, str]:
    """The replica id each raw-completion prompt goes to first (the router's prefix-affinity ranking)."""
    from types import SimpleNamespace

    from runtimes.cluster.routing import affinity_key, rank

    handles = [SimpleNamespace(replica_id=SimpleNamespace(unique_id=r["replica"])) for r in replicas]
    return {p: rank(affinity_key({"prompt": p}), handles)[0].replica_id.unique_id for p in prompts}


def test_a_dead_node_fails_only_the_stream_it_was_streaming(ray_cluster, front):
    """kill -9 of every process of the second node (raylet, workers, its replica) while its replica streams one
    request and holds two more in its queue (one slot per replica): the stream it was sending ends with a clean
    error event, the two queued are retried on the head's replica and succeed, `lms cluster status` and `lms ps`
    then show the node as down and its replica gone, and the daemon goes on serving. Runs last: the node stays
    dead."""
    import threading

    address, (head, victim) = ray_cluster
    front.json("cluster", "connect", address)
    front.run("load", CHAT_MODEL, "--identifier", "doomed", "--replicas", "2", "--parallel", "1", "-c", "1024",
              "-y", timeout=300)
    try:
        replicas = replicas_of(front, "doomed")
        doomed = [r for r in replicas if victim.owns(r["pid"])]
        assert len(doomed) == 1 and len(replicas) == 2, replicas  # Serve spreads replicas over the nodes
        dead_before = {n["id"] for n in front.json("cluster", "status")["nodes"] if not n["alive"]}
        candidates = [f"Tale {n}: once upon a time, by the sea, there lived" for n in range(40)]
        homes = routed_to(candidates, replicas)
        on_victim = [p for p in candidates if homes[p] == doomed[0]["replica"]][:3]
        on_head = [p for p in candidates if homes[p] != doomed[0]["replica"]][:2]
        results: dict[str, dict] = {}

        def stream(prompt: str, max_tokens: int = 120) -> None:
            got = results[prompt] = {"content": 0, "first": None, "error": None, "finished": False}
            body = {"model": "doomed", "prompt": prompt, "stream": True, "max_tokens": max_tokens, "temperature": 0.8}
            follow_completion_stream(front.base_url, body, got)
            got["ended"] = time.monotonic()

        threads = [threading.Thread(target=stream, args=(p,)) for p in on_victim[:1] + on_head[:1]]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(results.get(p, {}).get("content", 0) >= 3
                                                      for p in (on_victim[0], on_head[0])):
            time.sleep(0.1)  # both replicas are streaming
        queued = [threading.Thread(target=stream, args=(p, 40)) for p in on_victim[1:] + on_head[1:]]
        for thread in queued:
            thread.start()
        time.sleep(1.5)  # the router has handed the queued requests to their replicas
        assert all(results[p]["content"] == 0 for p in on_victim[1:])  # waiting behind the victim's stream
        victim.kill()
        killed = time.monotonic()
        for thread in threads + queued:
            thread.join(300)
        print(f"the node's stream ended {results[on_victim[0]]['ended'] - killed:.1f} s after the kill, the last "
              f"stream {time.monotonic() - killed:.1f} s after it")
        assert not any(thread.is_alive() for thread in threads + queued)  # nothing hung

        broken = results[on_victim[0]]
        assert broken["first"] < killed and broken["error"] and "replica" in broken["error"]["message"], broken
        for prompt in on_victim[1:] + on_head:  # retried on the head's replica, or served there all along
            assert results[prompt]["error"] is None and results[prompt]["finished"], (prompt, results[prompt])
        assert "retrying on another" in (front.home / "server-logs" / "workers.log").read_text()

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = front.json("cluster", "status")  # may answer "unreachable" for a moment while Ray notices
            down = [n for n in status.get("nodes", []) if not n["alive"] and n["id"] not in dead_before]
            if down:
                break
            time.sleep(2)
        print(f"node reported down {time.monotonic() - killed:.1f} s after the kill")
        assert status["reachable"] and [n["id"] for n in down] == [doomed[0]["nodeId"]], status
        assert not down[0]["replicas"]
        listed = replicas_of(front, "doomed")
        assert doomed[0]["nodeId"] not in [r["nodeId"] for r in listed if r["status"] == "ALIVE"], listed
        answer = httpx.post(front.base_url + "/v1/chat/completions", timeout=120, json={
            "model": "doomed", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
        assert answer.status_code == 200, answer.text
    finally:
        front.run("unload", "doomed", check=False)
