"""Control routes behind `lms config`: the daemon's settings (lms/settings.py), changed in settings.json and, where a
setting is read where it is used, in the running daemon too; and each model's load defaults (`lms config model`,
lms/manager/load_defaults.py)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lms.api.http import read_json
from lms.errors import LmsError
from lms.manager import load_defaults
from lms.settings import (
    APPLIES,
    DAEMON,
    LIVE,
    SECRET,
    Settings,
    env_variable,
    file_values,
    persist_setting,
    restart_note,
    validated_value,
)


def _shown(key: str, value: object) -> object:
    """A value as `lms config` shows it: secrets are never shown whole."""
    if key not in SECRET or not value:
        return value
    if key == "database_url":
        parts = urlsplit(str(value))
        if parts.password:
            return str(value).replace(f":{parts.password}@", ":***@", 1)
        return value
    return "***"


def _row(settings: Settings, key: str, in_file: dict) -> dict:
    field = Settings.model_fields[key]
    variable = env_variable(key)
    source = f"env ({variable})" if variable else "settings.json" if key in in_file else "default"
    applies = APPLIES.get(key, DAEMON)
    row = {"key": key, "value": _shown(key, getattr(settings, key)), "default": _shown(key, field.default),
           "source": source, "applies": "live" if applies == LIVE else f"restart {applies}"}
    if key in in_file and not variable and applies != LIVE:
        try:
            saved = validated_value(key, in_file[key])
        except LmsError:
            saved = in_file[key]
        if saved != getattr(settings, key):  # saved, not yet in effect
            row["pending"] = _shown(key, saved)
            row["note"] = restart_note(key)
    return row


def _key(body: dict) -> str:
    key = body.get("key")
    if not isinstance(key, str) or not key:
        raise LmsError.invalid("Name a setting: lms config ls lists them.", "key", code="missing_required_parameter")
    key = key.strip().lower().replace("-", "_")
    if key not in Settings.model_fields:
        raise LmsError.not_found(f"'{key}' is not a setting. Settings: {', '.join(Settings.model_fields)}.", "key",
                                 code="unknown_setting")
    return key


async def list_settings(request: Request):
    settings = request.app.state.daemon.settings
    in_file = file_values()
    return JSONResponse([_row(settings, key, in_file) for key in Settings.model_fields])


async def get_setting(request: Request):
    key = _key(await read_json(request))
    return JSONResponse(_row(request.app.state.daemon.settings, key, file_values()))


def _apply(settings: Settings, key: str, value: object) -> bool:
    """Put a saved value into the running daemon's settings when the setting is read where it is used."""
    if APPLIES.get(key) != LIVE or env_variable(key):
        return False
    setattr(settings, key, value)
    return True


async def set_setting(request: Request):
    """Validate one setting by the schema, keep it in settings.json, and apply it now where that is possible."""
    body = await read_json(request)
    key = _key(body)
    if "value" not in body:
        raise LmsError.invalid("Give the value to set.", "value", code="missing_required_parameter")
    settings = request.app.state.daemon.settings
    value = validated_value(key, body["value"])
    persist_setting(key, value)
    applied = _apply(settings, key, value)
    return JSONResponse(_answer(settings, key, applied, value))


async def unset_setting(request: Request):
    """Remove a setting from settings.json: its default (or its variable's value) applies again."""
    key = _key(await read_json(request))
    settings = request.app.state.daemon.settings
    persist_setting(key, None)
    variable = env_variable(key)
    value = validated_value(key, os.environ[variable]) if variable else Settings.model_fields[key].default
    applied = _apply(settings, key, value)
    return JSONResponse(_answer(settings, key, applied, value))


def _answer(settings: Settings, key: str, applied: bool, saved: object) -> dict:
    answer = {**_row(settings, key, file_values()), "saved": _shown(key, saved), "applied": applied}
    variable = env_variable(key)
    if variable:
        answer["note"] = f"the daemon's environment sets {variable}, which wins over settings.json until it is unset"
    elif not applied:
        answer["note"] = restart_note(key)
    return answer


# --- per-model load defaults ---------------------------------------------------------------------------------------


async def list_model_defaults(request: Request):
    return JSONResponse(load_defaults.read_all())


async def model_defaults(request: Request):
    """Show, change (`set`: setting -> value, null removes one) or `reset` a model's load defaults."""
    body = await read_json(request)
    manager = request.app.state.daemon.manager
    entry = manager.resolve(str(body.get("model") or ""))
    changes = body.get("set") or {}
    if not isinstance(changes, dict):
        raise LmsError.invalid("'set' must be an object of load settings.", "set")
    if changes.get("draft_model"):
        manager._draft(changes["draft_model"], entry, None)  # an unknown or unfit draft is refused now
    if isinstance(changes.get("kv_cache_type"), str):
        manager._kv_cache_type(entry, changes["kv_cache_type"])
    if changes or body.get("reset"):
        values = load_defaults.update(entry.model_key, changes, reset=bool(body.get("reset")))
    else:
        values = load_defaults.of(entry.model_key)
    return JSONResponse({"modelKey": entry.model_key, "loadDefaults": values})


def routes() -> list[Route]:
    return [Route("/lms/config", list_settings),
            Route("/lms/config/get", get_setting, methods=["POST"]),
            Route("/lms/config/set", set_setting, methods=["POST"]),
            Route("/lms/config/unset", unset_setting, methods=["POST"]),
            Route("/lms/config/models", list_model_defaults),
            Route("/lms/config/model", model_defaults, methods=["POST"])]
