"""Named presets from `LMS_HOME/config-presets/<name>.preset.json` (or `.json`): a system prompt, sampling and
structured output, applied by the pipeline (lms/pipeline/pipeline.py) to a request that names one with
`"preset": "<name>"`, and by `lms chat --preset`.

Two shapes are read: LM Studio's (`{"name", "operation": {"fields": [{"key": "llm.prediction.systemPrompt",
"value": ...}, ...]}}`) and a flat one with API names (`{"system_prompt", "temperature", "top_p", "top_k",
"min_p", "repeat_penalty", "max_tokens", "stop", "response_format"}`). What the request itself says wins.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from lms import config
from lms.errors import LmsError

# LM Studio's field keys, and the API name each one becomes.
LMSTUDIO_FIELDS = {
    "llm.prediction.systemPrompt": "system_prompt",
    "llm.prediction.temperature": "temperature",
    "llm.prediction.topPSampling": "top_p",
    "llm.prediction.topKSampling": "top_k",
    "llm.prediction.minPSampling": "min_p",
    "llm.prediction.repeatPenalty": "repeat_penalty",
    "llm.prediction.maxPredictedTokens": "max_tokens",
    "llm.prediction.stopStrings": "stop",
    "llm.prediction.structured": "response_format",
}
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "stop")


@dataclass
class Preset:
    name: str
    system_prompt: str | None = None
    sampling: dict = field(default_factory=dict)  # API names, as chat completions takes them
    response_format: dict | None = None


def presets_dir() -> Path:
    return config.home() / "config-presets"


def _unwrap(value):
    """LM Studio stores optional settings as {"checked": bool, "value": ...}."""
    if isinstance(value, dict) and "checked" in value:
        return value.get("value") if value.get("checked") else None
    return value


def _structured(value) -> dict | None:
    if not isinstance(value, dict):
        return None
    if value.get("type") in ("json", "json_schema") and (value.get("jsonSchema") or value.get("json_schema")):
        schema = value.get("jsonSchema") or value.get("json_schema")
        schema = schema.get("schema", schema) if isinstance(schema, dict) else schema
        return {"type": "json_schema", "json_schema": {"name": "preset", "schema": schema}}
    return value if value.get("type") in ("json_object", "json_schema", "text") else None


def parse(name: str, document: dict) -> Preset:
    values = dict(document)
    for item in (document.get("operation") or {}).get("fields") or []:
        if isinstance(item, dict) and item.get("key") in LMSTUDIO_FIELDS:
            values[LMSTUDIO_FIELDS[item["key"]]] = _unwrap(item.get("value"))
    sampling = {key: values[key] for key in SAMPLING if values.get(key) is not None}
    if "systemPrompt" in values and "system_prompt" not in values:
        values["system_prompt"] = values["systemPrompt"]
    return Preset(str(document.get("name") or name), values.get("system_prompt") or None, sampling,
                  _structured(values.get("response_format")))


def available() -> list[str]:
    folder = presets_dir()
    return sorted(p.name.removesuffix(".preset.json").removesuffix(".json") for p in folder.glob("*.json")) \
        if folder.is_dir() else []


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}")


def load(name: str) -> Preset:
    """The preset of that name in config-presets. A name is a plain file name (letters, digits, space, dot, dash,
    underscore), so no request can make lms read a file elsewhere."""
    folder = presets_dir()
    if not SAFE_NAME.fullmatch(name) or ".." in name:
        raise LmsError.invalid("A preset name is letters, digits, spaces, dots, dashes and underscores, naming a "
                               f"file in {folder}.", "preset", code="invalid_preset")
    for candidate in (folder / f"{name}.preset.json", folder / f"{name}.json"):
        if candidate.is_file():
            try:
                return parse(name, json.loads(candidate.read_text()))
            except (OSError, ValueError) as exc:
                raise LmsError.invalid(f"Preset '{name}' cannot be read: {exc}", "preset",
                                       code="invalid_preset") from None
    raise LmsError.not_found(f"No preset named '{name}' in {folder} (there are: {', '.join(available()) or 'none'}).",
                             "preset", code="preset_not_found")
