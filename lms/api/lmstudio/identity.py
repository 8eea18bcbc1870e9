"""Who is on the other end of a socket: the auth frame checked against API tokens when any exist, else guest
identities given first come, first served per client identifier and counted across the client's sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

from lms.api.lmstudio.frames import Credentials
from lms.errors import LmsError
from lms.tokens import Authenticator, Caller

# LM Studio's own words when a server that needs a token gets none.
TOKEN_REQUIRED = ("An LM Studio API token is required to make requests to this server, but none was provided. "
                  "Create one with `lms server token create NAME` and pass it to the SDK (it sends it as its "
                  "client identifier and passkey).")
TOKEN_INVALID = "The LM Studio API token is not valid (it may have been revoked). See `lms server token ls`."


def passkey_mismatch(identifier: str) -> str:
    return f'Failed to validate client: Invalid client passkey for client "{identifier}"'


@dataclass
class _Guest:
    passkey: str
    sockets: int = 0


@dataclass
class Identities:
    """The guest identities of one server: the first socket with an identifier fixes its passkey; the identity
    goes when the client's last socket closes."""

    guests: dict[str, _Guest] = field(default_factory=dict)

    def admit(self, creds: Credentials) -> None:
        guest = self.guests.get(creds.identifier)
        if guest is None:
            guest = self.guests[creds.identifier] = _Guest(creds.passkey)
        elif guest.passkey != creds.passkey:
            raise LmsError.unauthorized(passkey_mismatch(creds.identifier), code="invalid_client_passkey")
        guest.sockets += 1

    def release(self, identifier: str) -> None:
        guest = self.guests.get(identifier)
        if guest is not None:
            guest.sockets -= 1
            if guest.sockets <= 0:
                del self.guests[identifier]


def token_of(creds: Credentials) -> str:
    """The API token the SDKs split into identifier and passkey (`sk-lm-<identifier>:<passkey>`)."""
    return f"sk-lm-{creds.identifier}:{creds.passkey}"


def authenticate(authenticator: Authenticator | None, creds: Credentials | None) -> Caller | None:
    """The caller when tokens are required (None when they are not); LmsError.unauthorized when refused."""
    if authenticator is None or not authenticator.required():  # required() raises for an unreadable token file
        return None
    if creds is None:
        raise LmsError.unauthorized(TOKEN_REQUIRED, code="missing_api_key")
    caller = authenticator.caller(token_of(creds))
    if caller is None:
        guest = creds.identifier.startswith("guest:") or len(creds.identifier) != 8
        raise LmsError.unauthorized(TOKEN_REQUIRED if guest else TOKEN_INVALID,
                                    code="missing_api_key" if guest else "invalid_api_key")
    return caller
