"""Unit tests of the one error family (lms/errors.py) and of where its kinds become wire shapes: OpenAI's
(lms/api/errors.py) and Anthropic's (lms/api/anthropic.py)."""

from __future__ import annotations

import json

import pytest

from lms.api.anthropic import _error as anthropic_error
from lms.api.errors import STATUS, error_response, error_type, status_of
from lms.errors import Kind, LmsError


def test_every_kind_has_one_status():
    assert set(STATUS) == set(Kind)
    assert len(set(STATUS.values())) == len(Kind)


@pytest.mark.parametrize(("error", "status", "wire_type"), [
    (LmsError.invalid("bad", "temperature"), 400, "invalid_request_error"),
    (LmsError.missing("model"), 400, "invalid_request_error"),
    (LmsError.forbidden("off", "tools", code="remote_mcp_disabled"), 403, "permission_error"),
    (LmsError.not_found("no such model", "model", code="model_not_found"), 404, "invalid_request_error"),
    (LmsError.dependency("MCP server down", "tools"), 424, "invalid_request_error"),
    (LmsError.unavailable("worker died", code="worker_died"), 503, "server_error"),
    (LmsError.storage("disk full", code="disk_full"), 507, "server_error"),
    (LmsError.internal("boom"), 500, "server_error"),
])
def test_kinds_map_to_openai_statuses_and_types(error, status, wire_type):
    response = error_response(error)
    body = json.loads(response.body)["error"]
    assert (response.status_code, status_of(error), error_type(error)) == (status, status, wire_type)
    assert body == {"message": error.message, "type": wire_type, "param": error.param, "code": error.code}


def test_constructors_fill_default_codes():
    assert (LmsError.invalid("x").code, LmsError.missing("model").code) == ("invalid_value",
                                                                             "missing_required_parameter")
    assert LmsError.missing("model").message == "'model' is required"
    assert LmsError.cancelled("gone").code == "client_closed_request" and LmsError.internal("x").code is None


def test_an_error_survives_the_worker_boundary_with_its_kind():
    error = LmsError.invalid("too long", "messages", code="context_length_exceeded")
    event = json.loads(json.dumps(error.to_event()))
    assert event["type"] == "error" and "status" not in event
    back = LmsError.from_event(event)
    assert (back.kind, back.message, back.code, back.param) == (Kind.INVALID, "too long", "context_length_exceeded",
                                                                "messages")
    assert LmsError.from_event({"type": "error", "kind": "bogus", "message": "m"}).kind is Kind.INTERNAL


@pytest.mark.parametrize(("error", "status", "wire_type"), [
    (LmsError.invalid("bad", "max_tokens"), 400, "invalid_request_error"),
    (LmsError.not_found("no model", "model"), 404, "not_found_error"),
    (LmsError.unavailable("worker died", code="worker_died"), 503, "overloaded_error"),
    (LmsError.internal("boom"), 500, "api_error"),
])
def test_kinds_map_to_anthropic_shapes(error, status, wire_type):
    response = anthropic_error(error)
    assert response.status_code == status
    assert json.loads(response.body) == {"type": "error", "error": {"type": wire_type, "message": error.message}}
