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

from tests.conftest import CHAT_MODEL, Lms, free_port
from tools.ray_node import RayNode, wait_for_nodes

pytest.importorskip("ray", reason="the cluster extra (ray[serve]) is not installed")


@pytest.fixture(scope="module")
def cluster():
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = RayNode.head(port)
    nodes = [head]
    try:
        wait_for_nodes(address, 1)
        nodes.append(RayNode("--address", address, "--num-cpus", "2"))
        wait_for_nodes(address, 2)
        yield address
    finally:
        for node in reversed(nodes):
            node.stop()


@pytest.fixture(scope="module")
def front(cluster, tmp_path_factory):
    lms = Lms(home=tmp_path_factory.mktemp("cluster") / "home", port=free_port())
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


def replica_pids(front: Lms, identifier: str) -> list[int]:
    listed = {m["identifier"]: m for m in front.json("ps")}[identifier]
    return [r["pid"] for r in listed["replicas"] if r["status"] == "ALIVE"]


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


def test_replicas_scale_up_under_concurrent_load(cluster, front):
    from concurrent.futures import ThreadPoolExecutor

    front.json("cluster", "connect", cluster)
    front.run("load", CHAT_MODEL, "--identifier", "elastic", "--replicas", "1", "--max-replicas", "3",
              "--parallel", "1", "-c", "1024", "-y", timeout=300)
    try:
        listed = {m["identifier"]: m for m in front.json("ps")}["elastic"]
        assert (listed["minReplicas"], listed["maxReplicas"], len(listed["replicas"])) == (1, 3, 1)

        def long_answer(_n: int) -> int:
            return httpx.post(front.base_url + "/v1/chat/completions", timeout=600, json={
                "model": "elastic", "max_tokens": 120, "messages": [
                    {"role": "user", "content": f"Story {_n}: write a long story about the sea."}]}).status_code

        most = 1
        with ThreadPoolExecutor(8) as pool:
            running = [pool.submit(long_answer, n) for n in range(8)]
            deadline = time.monotonic() + 120
            while most < 2 and time.monotonic() < deadline and not all(f.done() for f in running):
                time.sleep(2)
                most = max(most, len(replica_pids(front, "elastic")))
            assert all(f.result() == 200 for f in running)
        assert most >= 2  # Serve added replicas while requests queued
    finally:
        front.run("unload", "elastic", check=False)
