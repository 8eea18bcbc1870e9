"""The llama.cpp engine's grammar for a request: strings that every JSON parser accepts, and nothing its grammar
parser cannot survive (a stack overflow there kills the worker)."""

from __future__ import annotations

import pytest

from lms.errors import Kind, LmsError
from lms.generation.request import GenerationRequest
from runtimes.llama_cpp.grammar import MAX_NESTING, grammar_text, nesting, schema_grammar


def test_schema_strings_exclude_raw_control_characters():
    grammar = schema_grammar({"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                                                "note": {"type": "string"}}})
    char_rules = [line for line in grammar.splitlines() if line.startswith("char ::=")]
    assert char_rules and all(r"\x00-\x1F" in rule for rule in char_rules)


def test_nesting_counts_groups_outside_literals_classes_and_comments():
    assert nesting('root ::= (("(" [()]) # (((\nx ::= (a)') == 2
    assert nesting(r'root ::= "\"(" [\](] (b)') == 1
    assert nesting("root ::= " + "(" * 50 + '"a"' + ")" * 50) == 50
    assert nesting('root ::= "a"') == 0


@pytest.mark.parametrize("schema", [{"type": "string", "minLength": 10**12},
                                    {"type": "array", "items": {"type": "string", "maxLength": 50_000}},
                                    {"type": "object", "properties": {"x": {"type": "array", "maxItems": 10**9}}}])
def test_counts_no_grammar_can_hold_are_refused_before_the_converter_runs(schema):
    with pytest.raises(LmsError) as refused:
        grammar_text(GenerationRequest(messages=[], json_schema=schema))
    assert refused.value.kind is Kind.INVALID and refused.value.code == "invalid_format"
    assert "at most 10000" in refused.value.message


def test_a_grammar_nested_deeper_than_the_parser_survives_is_refused():
    deep = "root ::= " + "(" * (MAX_NESTING + 1) + '"a"' + ")" * (MAX_NESTING + 1)
    with pytest.raises(LmsError) as refused:
        grammar_text(GenerationRequest(messages=[], grammar=deep))
    assert refused.value.code == "invalid_format" and "nests" in refused.value.message
    shallow = "root ::= " + "(" * 100 + '"a"' + ")" * 100
    assert grammar_text(GenerationRequest(messages=[], grammar=shallow)) == shallow
