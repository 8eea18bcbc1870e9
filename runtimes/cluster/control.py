"""`python -m runtimes.cluster.control status ADDRESS`: the cluster as `lms cluster status` shows it (nodes, their
CPUs and memory, lms's applications and the replicas on each node), printed as one JSON object. The daemon runs
it as a child process with a deadline, so a dead or unreachable cluster can never hang the daemon."""

from __future__ import annotations

import json
import sys

from runtimes.cluster.engine import application_status, connect


def cluster_status(address: str) -> dict:
    import ray
    from ray import serve

    connect(address)
    applications = {name: application_status(name) for name in serve.status().applications
                    if name.startswith("lms-")}
    nodes = []
    for node in ray.nodes():
        resources = node.get("Resources") or {}
        held = [{"application": name, "status": replica["status"]} for name, app in applications.items()
                for replica in app["replicas"] if replica["nodeId"] == node["NodeID"]]
        nodes.append({"id": node["NodeID"], "address": node.get("NodeManagerAddress", ""),
                      "alive": bool(node.get("Alive")), "cpus": resources.get("CPU", 0),
                      "memoryBytes": int(resources.get("memory", 0)), "replicas": held})
    return {"address": address, "nodes": nodes, "applications": applications}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "status":
        print("usage: python -m runtimes.cluster.control status ADDRESS", file=sys.stderr)
        return 2
    try:
        print(json.dumps(cluster_status(argv[1])))
    except Exception as exc:  # noqa: BLE001 - one line for the daemon to show
        text = str(exc).strip()
        print(json.dumps({"error": text.splitlines()[0] if text else type(exc).__name__}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
