"""Cluster placement and prefix-affinity routing on plain data (no cluster)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lms.errors import LmsError
from lms.manager.cluster import app_name, placement


def test_placement_needs_a_cluster_and_sane_counts():
    assert placement("", None, None) is None
    with pytest.raises(LmsError) as refused:
        placement("", 2, None)
    assert refused.value.code == "no_cluster" and "lms cluster connect" in refused.value.message
    where = placement("10.0.0.1:6379", 2, 4)
    assert (where.replicas, where.max_replicas, where.public()) == (2, 4, {"minReplicas": 2, "maxReplicas": 4})
    with pytest.raises(LmsError):
        placement("10.0.0.1:6379", 3, 2)
    assert app_name("my model:2") == "lms-my-model-2"


def test_a_conversation_keeps_its_key_and_its_replica():
    routing = pytest.importorskip("runtimes.cluster.routing")
    first = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "I am Ada."}]}
    follow_up = {"messages": [*first["messages"], {"role": "assistant", "content": "Hello Ada."},
                              {"role": "user", "content": "Who am I?"}]}
    other = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "I am Bob."}]}
    assert routing.affinity_key(first) == routing.affinity_key(follow_up) != routing.affinity_key(other)
    assert routing.affinity_key({"prompt": "x" * 600}) == "x" * routing.PROMPT_KEY_CHARS
    assert routing.affinity_key("count") is None
    replicas = [SimpleNamespace(replica_id=SimpleNamespace(unique_id=f"r{n}")) for n in range(4)]
    key = routing.affinity_key(first)
    home = routing.rank(key, replicas)[0]
    assert routing.rank(key, list(reversed(replicas)))[0] is home
    survivors = [r for r in replicas if r is not routing.rank(key, replicas)[-1]]
    assert routing.rank(key, survivors)[0] is home  # another replica going away does not move the key
    homes = {routing.rank(routing.affinity_key({"prompt": f"conversation {n}"}), replicas)[0].replica_id.unique_id
             for n in range(40)}
    assert len(homes) == 4  # keys spread over every replica
