"""What a script's `lms load` may take without Typer (lms/cli/fast.py): the common options, and nothing it would have
to check the way Typer does."""

from __future__ import annotations

from lms.cli.fast import _load_arguments as parse


def test_the_fast_load_parses_only_what_it_knows():
    assert parse(["k", "-y"]) == {"model": "k", "yes": True}
    assert parse(["k", "-c", "max"]) == {"model": "k", "context_length": "max"}
    assert parse(["k", "--ttl=5", "--json", "--identifier", "a b"]) == {"model": "k", "ttl": 5, "json": True,
                                                                       "identifier": "a b"}
    assert parse(["k", "--context-length", "2048", "--parallel", "2"]) == {"model": "k", "context_length": 2048,
                                                                          "parallel": 2}
    for refused in (["k", "--gpu", "max"], ["-y"], ["k", "j"], ["k", "-c", "x"], ["k", "--parallel", "0"],
                    ["k", "--identifier"], ["k", "--yes=1"], ["k", "--estimate-only"]):
        assert parse(refused) is None, refused
