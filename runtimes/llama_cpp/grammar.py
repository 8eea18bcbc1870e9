"""The GBNF grammar a request's output format asks for, kept within what llama.cpp's grammar parser survives.

The parser recurses once per nested group, so a grammar nested tens of thousands of groups deep (written by hand,
or by the schema converter for a `maxLength` in the tens of thousands) overflows the worker's stack and kills it,
with every request it was serving. The converter also writes out each repetition a schema asks for, so a count in
the billions fills the memory before llama.cpp could refuse it. Both are refused here as bad requests, at bounds
far beyond real use: llama.cpp itself refuses repetitions of more than a few thousand rules.
"""

from __future__ import annotations

import json
import re

import numpy as np
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from lms.errors import LmsError
from lms.generation.request import GenerationRequest
from runtimes.common import format_param

# llama-cpp-python's schema converter lets a string hold raw control characters (a newline, a tab), which no JSON
# parser accepts; its own JSON grammar, and llama.cpp's converter, exclude them.
LOOSE_STRING_CHAR = r'char ::= [^"\\] |'
STRICT_STRING_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'
MAX_NESTING = 4_000  # measured: 5,000 nested groups parse, 20,000 crash the parser
MAX_COUNT = 10_000  # llama.cpp refuses (cleanly) repetitions from about 2,000 rules on
OPAQUE = re.compile(r'"(?:[^"\\]+|\\.)*"|\[(?:[^\]\\]+|\\.)*\]|#[^\r\n]*')  # literals, classes, comments
COUNT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")


def schema_grammar(schema: dict) -> str:
    """The GBNF of a JSON schema, with strings that stay valid JSON."""
    _check_counts(schema)
    return json_schema_to_gbnf(json.dumps(schema)).replace(LOOSE_STRING_CHAR, STRICT_STRING_CHAR)


def grammar_text(request: GenerationRequest) -> str | None:
    """The GBNF a request's output format asks for, if any."""
    try:
        if request.grammar:
            grammar = request.grammar
        elif request.json_schema is not None:
            grammar = schema_grammar(request.json_schema)
        else:
            return JSON_GBNF if request.json_object else None
        if (depth := nesting(grammar)) > MAX_NESTING:
            raise ValueError(f"it nests {depth} groups deep, more than the {MAX_NESTING} the engine can parse")
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise LmsError.invalid(f"cannot build a grammar for the requested format: {reason}", format_param(request),
                               code="invalid_format") from exc
    return grammar


def _check_counts(schema) -> None:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in COUNT_KEYWORDS and isinstance(value, int | float) and value > MAX_COUNT:
                raise ValueError(f"'{key}' is {value}; a grammar can enforce at most {MAX_COUNT}")
            _check_counts(value)
    elif isinstance(schema, list):
        for item in schema:
            _check_counts(item)


def nesting(grammar: str) -> int:
    """How deep the grammar's groups nest: parentheses outside quoted literals, character classes and comments."""
    bare = OPAQUE.sub("", grammar).encode()
    steps = np.frombuffer(bare, dtype=np.uint8)
    depth = np.cumsum((steps == ord("(")).astype(np.int64) - (steps == ord(")")))
    return int(depth.max()) if depth.size else 0
