"""lms server token create|ls|revoke: the API tokens every surface of the server asks for once one exists."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from lms.cli.output import fail, info, print_json, table

token_app = typer.Typer(help="Create, list and revoke API tokens. As soon as one exists, the server asks every "
                             "client for one.", no_args_is_help=True)


def _store():
    from lms.tokens import TokenStore

    return TokenStore()


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "never"


@token_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name to tell the token by (letters, digits, spaces, . _ -).")],
    scope: Annotated[str, typer.Option("--scope", help="inference: generate and list models. admin: also load, "
                                                       "unload, download, delete and use mcp.json servers.")]
    = "inference",
    json_: Annotated[bool, typer.Option("--json", help="Print the token and its details as JSON.")] = False,
):
    """Create a token and print it once: it is stored hashed and cannot be shown again."""
    from lms.errors import LmsError

    try:
        token, secret = _store().create(name, scope)
    except LmsError as exc:
        fail(exc.message)
    if json_:
        print_json({**token.public(), "token": secret})
        return
    print(secret)
    info(f"Created the {token.scope} token '{token.name}'. Copy it now: it is not shown again. Clients send it as "
         "'Authorization: Bearer <token>'.")


@token_app.command("ls")
def list_tokens(json_: Annotated[bool, typer.Option("--json", help="Print the tokens as JSON.")] = False):
    """List the tokens: names, scopes, when each was created and last used (never the secrets)."""
    from lms.errors import LmsError

    try:
        tokens = [token.public() for token in _store().tokens()]
    except LmsError as exc:
        fail(exc.message)
    if json_:
        print_json(tokens)
        return
    if not tokens:
        info("No API tokens. The server answers without one (on loopback addresses only); create one with "
             "`lms server token create NAME`.")
        return
    print(table(["NAME", "IDENTIFIER", "SCOPE", "CREATED", "LAST USED"],
                [[t["name"], t["identifier"], t["scope"], _when(t["created"]), _when(t["last_used"])]
                 for t in tokens]))


@token_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The token's name, or its identifier (the part before the colon).")],
    json_: Annotated[bool, typer.Option("--json", help="Print the revoked token as JSON.")] = False,
):
    """Revoke a token: the server refuses it from the next request on."""
    from lms.errors import LmsError

    store = _store()
    try:
        token = store.revoke(name)
        left = len(store.tokens())
    except LmsError as exc:
        fail(exc.message)
    if json_:
        print_json({**token.public(), "revoked": True, "tokens_left": left})
        return
    info(f"Revoked the token '{token.name}'." + ("" if left else
         " No tokens are left: the server answers without one again (unless api_token is set)."))
