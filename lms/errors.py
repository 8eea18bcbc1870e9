"""The one error family of lms: every layer (store, manager, worker, pipeline) raises an `LmsError` of a kind
that says what went wrong in domain terms; each API surface turns the kind into its own wire shape and status
in one place (lms/api/errors.py for OpenAI's shape and the native API, the Anthropic surface for Anthropic's).

An error crosses the worker's process boundary as an event (`to_event` / `from_event`) and the control socket
as a dict (`to_dict` / `from_dict`), so the kind survives every hop.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    INVALID = "invalid"  # the request is wrong; `param` names the field
    UNAUTHORIZED = "unauthorized"  # no or a wrong API token
    FORBIDDEN = "forbidden"  # not allowed until a setting turns it on
    NOT_FOUND = "not_found"  # a model, response, job or endpoint that does not exist
    CONFLICT = "conflict"  # the current state does not allow it (identifier in use, server not running)
    TOO_LARGE = "too_large"  # a body or file over its limit
    TIMEOUT = "timeout"  # the request itself did not arrive in time (a body sent too slowly)
    MEDIA_TYPE = "media_type"  # a body that is not JSON where JSON is taken
    CANCELLED = "cancelled"  # the client went away
    UNAVAILABLE = "unavailable"  # retry later: a worker died, a model is going away
    UPSTREAM = "upstream"  # a service lms called failed (the Hub)
    DEPENDENCY = "dependency"  # a tool server the request named failed (an MCP server)
    STORAGE = "storage"  # the disk or the memory cannot hold it
    INTERNAL = "internal"  # an engine failure or a bug of ours


def _constructor(kind: Kind, default_code: str | None = None):
    def make(cls, message: str, param: str | None = None, *, code: str | None = default_code,
             retry_after: int | None = None) -> LmsError:
        return cls(message, kind, code=code, param=param, retry_after=retry_after)

    make.__doc__ = f"An error of kind {kind.value!r}; `param` names the request field it is about."
    return classmethod(make)


class LmsError(Exception):
    """A failure the client should hear about: a kind, a human message, a machine code and the field it is about;
    `retry_after` (seconds) when trying again later should work (a full queue), sent as a Retry-After header."""

    def __init__(self, message: str, kind: Kind = Kind.INTERNAL, *, code: str | None = None,
                 param: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message, self.kind, self.code, self.param = message, Kind(kind), code, param
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"LmsError({self.message!r}, {self.kind.value}, code={self.code!r}, param={self.param!r})"

    # Constructors, one per kind: LmsError.invalid("...", "temperature"), LmsError.storage("...", code="disk_full").
    invalid = _constructor(Kind.INVALID, "invalid_value")
    unauthorized = _constructor(Kind.UNAUTHORIZED, "invalid_api_key")
    forbidden = _constructor(Kind.FORBIDDEN)
    not_found = _constructor(Kind.NOT_FOUND, "not_found")
    conflict = _constructor(Kind.CONFLICT)
    too_large = _constructor(Kind.TOO_LARGE, "request_too_large")
    timeout = _constructor(Kind.TIMEOUT, "request_timeout")
    media_type = _constructor(Kind.MEDIA_TYPE, "unsupported_media_type")
    unavailable = _constructor(Kind.UNAVAILABLE)
    upstream = _constructor(Kind.UPSTREAM)
    dependency = _constructor(Kind.DEPENDENCY)
    storage = _constructor(Kind.STORAGE)
    internal = _constructor(Kind.INTERNAL)
    cancelled = _constructor(Kind.CANCELLED, "client_closed_request")

    @classmethod
    def missing(cls, param: str, message: str | None = None) -> LmsError:
        return cls(message or f"'{param}' is required", Kind.INVALID, code="missing_required_parameter", param=param)

    # --- across process and socket boundaries -------------------------------------------------------------

    def to_dict(self) -> dict:
        data = {"kind": self.kind.value, "message": self.message, "code": self.code, "param": self.param}
        if self.retry_after is not None:
            data["retry_after"] = self.retry_after
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LmsError:
        try:
            kind = Kind(data.get("kind") or Kind.INTERNAL)
        except ValueError:
            kind = Kind.INTERNAL
        retry_after = data.get("retry_after")
        return cls(str(data.get("message") or "failed"), kind, code=data.get("code"), param=data.get("param"),
                   retry_after=retry_after if isinstance(retry_after, int) and not isinstance(retry_after, bool)
                   else None)

    def to_event(self) -> dict:
        return {"type": "error", **self.to_dict()}

    @classmethod
    def from_event(cls, event: dict) -> LmsError:
        return cls.from_dict(event)
