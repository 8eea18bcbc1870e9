"""A cluster model on separate hosts: each Ray node runs in a network namespace of its own (tools/netns.py), with
its own address, ports and loopback, on a bridge that is the hosts' private network, as machines in a rack. The
Ray head is on h1 (10.213.N.11), a second node on h2 (.12), and the lms front daemon in the root namespace reaches
them only through the bridge (.1), where a 0-CPU Ray node runs for its Ray driver (a driver must run on a node).
The front host also has a process table of its own (a PID namespace): a Ray driver finds its local node by looking
for raylet processes, and on one shared process table it would take h1's head for its own.

One replica per host, a chat through the front, then h2 loses power (kill -9 of every process in its namespace)
while its replica streams one request and holds another: the stream ends with a clean error, the held request and
the ones sent next are served by h1's replica, `lms cluster status` reports h2 dead, and the daemon stays up.

Needs root (network namespaces); skipped otherwise, where tests/test_cluster.py covers the same with local nodes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import CHAT_MODEL, REPO, Lms, _new_lms, follow_completion_stream
from tools import netns
from tools.ray_node import RayNode, wait_for_nodes

pytest.importorskip("ray", reason="the cluster extra (ray[serve]) is not installed")

GCS_PORT = 6379  # each host has its own ports: no clash with anything on this machine
DEAD_NODE_DEADLINE_S = 90  # Ray's health checks declared h2 dead about 17 s after the kill here


@pytest.fixture(scope="module")
def network():
    reason = netns.unavailable_reason(pid_namespaces=True)
    if reason:
        pytest.skip(f"network namespaces are not available here ({reason}); tests/test_cluster.py runs the "
                    "cluster tests on local Ray nodes instead")
    with netns.Network(("h1", "h2")) as net:
        yield net
        net.close()
        leftover = [name for name in netns.namespaces() if name.startswith(f"lms{net.number}-")]
        assert not leftover, f"namespaces left behind: {leftover}"


@dataclass
class Hosts:
    address: str  # the head's, on h1
    nodes: dict[str, RayNode]  # h1, h2, and the front's ("front")
    front: netns.PidNamespace  # the front host's own process table


@pytest.fixture(scope="module")
def hosts(network):
    """The Ray head on h1, a node on h2 (one logical CPU each: one replica each), and the front host: the root
    network namespace, at the bridge's address, with a process table of its own (as a machine of its own), where a
    0-CPU Ray node runs for the daemon's Ray driver. Everything stopped afterwards, nothing of it left running."""
    address = f"{network.address('h1')}:{GCS_PORT}"
    nodes: dict[str, RayNode] = {}
    front = netns.PidNamespace()
    started = time.monotonic()
    try:
        nodes["h1"] = RayNode.head(GCS_PORT, cpus=1, node_ip=network.address("h1"), prefix=network.prefix("h1"))
        wait_for_nodes(address, 1)
        nodes["h2"] = RayNode("--address", address, "--node-ip-address", network.address("h2"), "--num-cpus", "1",
                              prefix=network.prefix("h2"))
        nodes["front"] = RayNode("--address", address, "--node-ip-address", network.gateway, "--num-cpus", "0",
                                 prefix=front.prefix)
        wait_for_nodes(address, 3, timeout=90)
        print(f"three Ray nodes up in {time.monotonic() - started:.1f} s")
        yield Hosts(address, nodes, front)
    finally:
        front.close()  # the front's node and whatever the daemon left
        for node in reversed(list(nodes.values())):
            node.stop()
        time.sleep(0.5)
        stray = [process.pid for node in nodes.values() for process in node.processes()]
        for host in network.hosts:
            stray += network.pids(host)
        assert not stray, f"Ray processes left behind: {stray}"


@pytest.fixture(scope="module")
def front(hosts, tmp_path_factory):
    """The lms daemon on the front host, started there (its workers, the Ray drivers, are its children)."""
    lms = _new_lms(tmp_path_factory.mktemp("netns") / "home")

    def on_front_host(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*hosts.front.prefix, sys.executable, "-m", "lms", *args], env=lms.env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    started = on_front_host("server", "start", "-p", str(lms.port))
    assert started.returncode == 0, started.stdout + started.stderr
    yield lms
    on_front_host("daemon", "down")  # its PIDs are the front host's: stopped there


@pytest.fixture(scope="module")
def spread(hosts, front):
    """The bundled chat model on two replicas (one slot each), connected and loaded through the CLI."""
    connected = front.json("cluster", "connect", hosts.address)
    assert connected["connected"], connected
    started = time.monotonic()
    front.run("load", CHAT_MODEL, "--identifier", "spread", "--replicas", "2", "--parallel", "1", "-c", "1024", "-y",
              timeout=300)
    print(f"loaded on two replicas in {time.monotonic() - started:.1f} s")
    yield "spread"
    front.run("unload", "spread", check=False, timeout=120)


def replicas_of(front: Lms, identifier: str) -> list[dict]:
    return {m["identifier"]: m for m in front.json("ps")}[identifier]["replicas"]


def homes(prompts: list[str], replicas: list[dict]) -> dict[str, str]:
    """The replica each raw prompt goes to first (the prefix-affinity router's ranking, runtimes/cluster/routing.py)."""
    from types import SimpleNamespace

    from runtimes.cluster.routing import affinity_key, rank

    handles = [SimpleNamespace(replica_id=SimpleNamespace(unique_id=r["replica"])) for r in replicas]
    return {p: rank(affinity_key({"prompt": p}), handles)[0].replica_id.unique_id for p in prompts}


def test_one_replica_on_each_host_answers_through_the_bridge(network, hosts, front, spread):
    status = front.json("cluster", "status")
    assert sorted(n["address"] for n in status["nodes"] if n["alive"]) == sorted(
        [network.gateway, network.address("h1"), network.address("h2")]), status
    replicas = replicas_of(front, spread)
    assert all(r["status"] == "ALIVE" for r in replicas), replicas
    assert sorted(r["node"] for r in replicas) == [network.address("h1"), network.address("h2")], replicas

    answer = httpx.post(front.base_url + "/v1/chat/completions", timeout=120, json={
        "model": spread, "max_tokens": 12, "temperature": 0,
        "messages": [{"role": "user", "content": "Name a colour."}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"].strip()


def test_a_host_lost_fails_only_its_stream_and_the_front_goes_on(network, hosts, front, spread):
    """kill -9 of every process in h2's namespace (raylet first) while h2's replica streams one request and holds
    a second in its queue (one slot): the stream ends with a clean error, the held request is retried on h1's
    replica and finishes, requests sent afterwards whose home was h2's replica are served by h1's, `lms cluster
    status` reports h2's node dead, and the daemon (same PID) goes on serving. Runs last: h2 stays dead."""
    replicas = replicas_of(front, spread)
    [victim] = [r for r in replicas if r["node"] == network.address("h2")]
    candidates = [f"Tale {n}: once upon a time, by the sea, there lived" for n in range(60)]
    home = homes(candidates, replicas)
    on_h2 = [p for p in candidates if home[p] == victim["replica"]][:4]
    assert len(on_h2) == 4
    streaming, held, later = on_h2[0], on_h2[1], on_h2[2:]
    daemon_pid = json.loads(front.run("daemon", "status", "--json").stdout)["pid"]
    results: dict[str, dict] = {}

    def stream(prompt: str, max_tokens: int, endless: bool = False) -> None:
        got = results[prompt] = {"content": 0, "first": None, "error": None, "finished": False}
        body = {"model": spread, "prompt": prompt, "stream": True, "max_tokens": max_tokens, "temperature": 0.8}
        if endless:  # no end-of-text, <|im_start|> or <|im_end|>: it streams until the host goes
            body["logit_bias"] = {"0": -100, "1": -100, "2": -100}
        try:
            follow_completion_stream(front.base_url, body, got)
        except httpx.HTTPError as exc:  # the connection itself broke: not the clean error this test expects
            got["broken"] = repr(exc)
        finally:
            got["ended"] = time.monotonic()

    threads = [threading.Thread(target=stream, args=(streaming, 1000, True))]
    threads[0].start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and results.get(streaming, {}).get("content", 0) < 3:
        time.sleep(0.1)  # h2's replica is streaming
    threads.append(threading.Thread(target=stream, args=(held, 24)))
    threads[1].start()
    time.sleep(1.5)  # the router has handed it to h2's replica, where it waits for the one slot
    assert results[held]["content"] == 0 and not results[streaming]["finished"], results

    killed_pids = network.kill("h2")
    killed = time.monotonic()
    assert killed_pids and not network.pids("h2")
    for thread in threads:
        thread.join(300)
    assert not any(thread.is_alive() for thread in threads)  # nothing hung
    print(f"killed {len(killed_pids)} processes on h2; its stream ended "
          f"{results[streaming]['ended'] - killed:.1f} s later, the held request "
          f"{results[held]['ended'] - killed:.1f} s later")
    broken = results[streaming]
    assert broken["first"] < killed and broken["error"] and "replica" in broken["error"]["message"], broken
    assert results[held]["error"] is None and results[held]["finished"], results[held]

    for prompt in later:  # not started when h2 went: served by the replica that is left
        answer = httpx.post(front.base_url + "/v1/completions", timeout=120, json={
            "model": spread, "prompt": prompt, "max_tokens": 8, "temperature": 0})
        assert answer.status_code == 200 and answer.json()["choices"][0]["text"], answer.text
    assert "retrying on another" in (front.home / "server-logs" / "workers.log").read_text()

    deadline = time.monotonic() + DEAD_NODE_DEADLINE_S
    while True:
        status = front.json("cluster", "status")  # may answer "unreachable" for a moment while Ray notices
        nodes = {n["address"]: n for n in status.get("nodes", [])}
        h2 = nodes.get(network.address("h2"))
        if (h2 is not None and not h2["alive"]) or time.monotonic() > deadline:
            break
        time.sleep(2)
    print(f"h2 reported dead {time.monotonic() - killed:.1f} s after the kill")
    assert status["reachable"] and not nodes[network.address("h2")]["alive"], status
    assert not nodes[network.address("h2")]["replicas"]
    assert nodes[network.address("h1")]["alive"] and nodes[network.gateway]["alive"], status
    alive = [r for r in replicas_of(front, spread) if r["status"] == "ALIVE"]
    assert [r["node"] for r in alive] == [network.address("h1")], alive

    assert json.loads(front.run("daemon", "status", "--json").stdout)["pid"] == daemon_pid
    answer = httpx.post(front.base_url + "/v1/chat/completions", timeout=120, json={
        "model": spread, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
    assert answer.status_code == 200, answer.text
