"""`lms import`: place a model file into models/<user>/<repo>/ by moving, copying or linking it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lms import config
from lms.store.gguf import GGUFError, read_header
from lms.store.hub import path_problem

DEFAULT_USER_REPO = "imported-models/uncategorized"
_VERBS = {"move": ("Would move the file to", "File moved to"),
          "copy": ("Would copy the file to", "File copied to"),
          "hard-link": ("Would create a hard link at", "Hard link created at"),
          "symbolic-link": ("Would create a symbolic link at", "Symbolic link created at")}


class ImportError_(ValueError):
    pass


@dataclass
class ImportPlan:
    source: Path
    target: Path
    mode: str

    def describe(self, future: bool) -> str:
        return f"{_VERBS[self.mode][0 if future else 1]} {self.target}"


def plan_import(source: Path, user_repo: str | None, mode: str) -> ImportPlan:
    source = source.expanduser().absolute()  # not resolve(): a symlink keeps its own (model) name
    if not source.is_file():
        raise ImportError_(f"File not found: {source}")
    if source.suffix.lower() != ".gguf":
        raise ImportError_("Only GGUF model files (.gguf) can be imported.")
    try:
        read_header(source)
    except (OSError, GGUFError) as exc:
        raise ImportError_(f"{source.name} is not a valid GGUF file: {exc}") from exc
    user_repo = user_repo or DEFAULT_USER_REPO
    parts = user_repo.strip("/").split("/")
    if len(parts) != 2 or path_problem(user_repo.strip("/")):  # two plain names: the target stays in models/
        raise ImportError_(f"--user-repo must look like user/repo, got '{user_repo}'.")
    target = config.models_dir() / parts[0] / parts[1] / source.name
    if target.exists() or target.is_symlink():
        raise ImportError_(f"Target file already exists: {target}")
    return ImportPlan(source, target, mode)


def run_import(plan: ImportPlan) -> None:
    plan.target.parent.mkdir(parents=True, exist_ok=True)
    if plan.mode == "move":
        shutil.move(plan.source, plan.target)
    elif plan.mode == "copy":
        temporary = plan.target.with_name(plan.target.name + ".importing")
        shutil.copyfile(plan.source, temporary)
        os.replace(temporary, plan.target)  # never a half file in the catalog
    elif plan.mode == "hard-link":
        os.link(plan.source, plan.target)
    else:
        plan.target.symlink_to(plan.source)
