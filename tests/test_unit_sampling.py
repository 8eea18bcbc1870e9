"""The llama.cpp engine's grammar for a JSON schema: strings that every JSON parser accepts."""

from __future__ import annotations

from runtimes.llama_cpp.sampling import schema_grammar


def test_schema_strings_exclude_raw_control_characters():
    grammar = schema_grammar({"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                                                "note": {"type": "string"}}})
    char_rules = [line for line in grammar.splitlines() if line.startswith("char ::=")]
    assert char_rules and all(r"\x00-\x1F" in rule for rule in char_rules)
