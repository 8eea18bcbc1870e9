"""Per-model load settings: what a load of a model uses unless the load itself says otherwise (`lms config model`),
kept in `LMS_HOME/model-defaults.json` as `{model key: {setting: value}}`. Every load reads them (`lms load`, JIT
loads, `/api/v1/models/load`, LM Studio's SDK, Ollama), through ModelManager.load.

The same schema checks the settings of one load, wherever it comes from (`LoadSettings`)."""

from __future__ import annotations

import json
import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lms import config
from lms.errors import LmsError

KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")
FLASH_ATTENTION = ("on", "off", "auto")


class LoadSettings(BaseModel):
    """The settings of a load; None: not given (the model's default, else the daemon's)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types: true is not 1, "8" not 8

    # any integer: the manager says which lengths the model takes (1 to its maximum)
    context_length: int | Literal["max"] | None = None
    parallel: Annotated[int, Field(ge=1)] | None = None
    ttl: Annotated[int, Field(ge=1)] | None = None
    gpu: Literal["off", "max"] | Annotated[float, Field(ge=0, le=1)] | None = None
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] | None = None
    flash_attention: Literal["on", "off", "auto"] | None = None
    batch_size: Annotated[int, Field(ge=1, le=65536)] | None = None
    draft_model: str | None = None
    draft_max_tokens: Annotated[int, Field(ge=1)] | None = None
    draft_min_probability: Annotated[float, Field(ge=0, le=1)] | None = None
    speculative: Literal["ngram", "off"] | None = None  # "ngram": prompt-lookup drafts, no draft model
    identifier: str | None = None

    def given(self) -> dict:
        return self.model_dump(exclude_none=True)


def checked(values: dict) -> LoadSettings:
    """`values` as load settings; LmsError (invalid) naming the setting that is wrong."""
    try:
        return LoadSettings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "settings"
        if error["type"] == "extra_forbidden":
            raise LmsError.invalid(f"'{name}' is not a load setting. Load settings: "
                                   f"{', '.join(LoadSettings.model_fields)}.", name) from None
        raise LmsError.invalid(f"'{name}' {_why(name)}, got {json.dumps(error.get('input'), default=str)}.",
                               name) from None


def _why(name: str) -> str:
    return {"context_length": "must be a positive integer or max", "gpu": "must be off, max or a number from 0 to 1",
            "kv_cache_type": f"must be one of {', '.join(KV_CACHE_TYPES)}",
            "flash_attention": f"must be one of {', '.join(FLASH_ATTENTION)}",
            "draft_min_probability": "must be a number from 0 to 1",
            "batch_size": "must be an integer from 1 to 65536",
            "draft_model": "must be a model key", "identifier": "must be a string",
            "speculative": "must be ngram or off"}.get(
        name, "must be a positive integer")


def path():
    return config.home() / "model-defaults.json"


def read_all() -> dict[str, dict]:
    """Every model's defaults; a file that cannot be read counts as none (its problem is in the daemon's log once
    `lms config model` writes it again)."""
    try:
        values = json.loads(path().read_text())
    except (OSError, ValueError):
        return {}
    return {key: value for key, value in values.items() if isinstance(value, dict)} if isinstance(values, dict) \
        else {}


def of(model_key: str) -> dict:
    """The defaults of one model (by its model key), checked: {} when it has none; a value edited by hand into
    something that is not a load setting is an error naming the file."""
    values = read_all().get(model_key.lower(), {})
    try:
        return checked(values).given() if values else {}
    except LmsError as exc:
        raise LmsError.invalid(f"{path()}: {model_key}: {exc.message} Fix it with lms config model {model_key} "
                               "(--reset forgets them).", exc.param, code="invalid_load_defaults") from None


def update(model_key: str, changes: dict, reset: bool = False) -> dict:
    """Merge `changes` (checked) into a model's defaults (after dropping them all with `reset`), keep them, and
    return the model's defaults now. A change to None removes that setting."""
    every = read_all()
    current = {} if reset else dict(every.get(model_key.lower(), {}))
    current.update(changes)
    current = {key: value for key, value in current.items() if value is not None}
    current = checked(current).given()
    if isinstance(current.get("context_length"), int) and current["context_length"] < 1:
        raise LmsError.invalid("'context_length' must be a positive integer or max.", "context_length")
    if current:
        every[model_key.lower()] = current
    else:
        every.pop(model_key.lower(), None)
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(json.dumps(every, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, target)
    return current
