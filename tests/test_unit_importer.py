"""Unit tests of `lms import` (lms/store/importer.py): planning an import and moving, copying or linking a GGUF
file into the catalog. The files are tiny synthetic GGUFs (tests/gguf_files.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gguf_files import write_gguf

from lms import config
from lms.store.catalog import scan
from lms.store.importer import DEFAULT_USER_REPO, ImportError_, plan_import, run_import


@pytest.fixture
def source_gguf(tmp_path) -> Path:
    return write_gguf(tmp_path / "downloads" / "my-model-Q4_K_M.gguf")


def test_import_defaults_to_imported_models_uncategorized(lms_home, source_gguf):
    plan = plan_import(source_gguf, None, "move")

    assert DEFAULT_USER_REPO == "imported-models/uncategorized"
    assert plan.target == lms_home / "models" / "imported-models" / "uncategorized" / source_gguf.name
    assert plan.source == source_gguf.resolve()
    assert plan.describe(future=True) == f"Would move the file to {plan.target}"
    assert plan.describe(future=False) == f"File moved to {plan.target}"
    assert not plan.target.parent.exists()  # planning changes nothing


def test_import_move_moves_the_file_into_the_catalog(lms_home, source_gguf):
    content = source_gguf.read_bytes()
    plan = plan_import(source_gguf, "me/my-repo", "move")

    run_import(plan)

    assert not source_gguf.exists()
    assert plan.target == lms_home / "models" / "me" / "my-repo" / source_gguf.name
    assert plan.target.read_bytes() == content
    assert [entry.model_key for entry in scan(config.models_dir())] == ["me/my-repo"]


def test_import_copy_keeps_the_original_and_leaves_no_temporary_file(lms_home, source_gguf):
    plan = plan_import(source_gguf, "me/my-repo", "copy")

    run_import(plan)

    assert source_gguf.exists()
    assert plan.target.read_bytes() == source_gguf.read_bytes()
    assert not plan.target.is_symlink()
    assert sorted(p.name for p in plan.target.parent.iterdir()) == [source_gguf.name]
    assert plan.describe(future=False) == f"File copied to {plan.target}"


def test_import_hard_link_shares_the_inode(lms_home, source_gguf):
    plan = plan_import(source_gguf, "me/my-repo", "hard-link")

    run_import(plan)

    assert os.path.samefile(source_gguf, plan.target)
    assert not plan.target.is_symlink()
    assert source_gguf.stat().st_nlink == 2
    assert plan.describe(future=True) == f"Would create a hard link at {plan.target}"


def test_import_symbolic_link_points_at_the_absolute_source(lms_home, source_gguf):
    plan = plan_import(source_gguf, "me/my-repo", "symbolic-link")

    run_import(plan)

    assert plan.target.is_symlink()
    assert Path(os.readlink(plan.target)) == source_gguf.resolve()
    assert plan.describe(future=False) == f"Symbolic link created at {plan.target}"


def test_import_accepts_a_relative_source_path(lms_home, source_gguf, monkeypatch):
    monkeypatch.chdir(source_gguf.parent)

    plan = plan_import(Path(source_gguf.name), "me/repo", "symbolic-link")

    assert plan.source == source_gguf.resolve()


def test_import_refuses_a_gguf_named_file_that_is_not_gguf(lms_home, tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_text("hello")

    with pytest.raises(ImportError_, match="not a valid GGUF file"):
        plan_import(fake, None, "move")


def test_import_refuses_a_file_without_gguf_extension(lms_home, tmp_path, source_gguf):
    renamed = source_gguf.rename(tmp_path / "model.bin")

    with pytest.raises(ImportError_, match=r"Only GGUF model files \(\.gguf\)"):
        plan_import(renamed, None, "copy")


def test_import_refuses_a_missing_file(lms_home, tmp_path):
    with pytest.raises(ImportError_, match="File not found"):
        plan_import(tmp_path / "missing.gguf", None, "copy")


def test_import_refuses_a_directory(lms_home, tmp_path):
    folder = tmp_path / "folder.gguf"
    folder.mkdir()

    with pytest.raises(ImportError_, match="File not found"):
        plan_import(folder, None, "copy")


@pytest.mark.parametrize("user_repo", ["justone", "a/b/c", "a//b", "../repo", "user/..", "./repo", "/"])
def test_import_refuses_a_bad_user_repo(lms_home, source_gguf, user_repo):
    with pytest.raises(ImportError_, match="--user-repo must look like user/repo"):
        plan_import(source_gguf, user_repo, "copy")


def test_import_tolerates_surrounding_slashes_in_user_repo(lms_home, source_gguf):
    plan = plan_import(source_gguf, "/me/repo/", "copy")

    assert plan.target == lms_home / "models" / "me" / "repo" / source_gguf.name


def test_import_refuses_an_existing_target(lms_home, source_gguf):
    write_gguf(lms_home / "models" / "me" / "repo" / source_gguf.name)

    with pytest.raises(ImportError_, match="Target file already exists"):
        plan_import(source_gguf, "me/repo", "copy")


def test_import_refuses_a_dangling_link_at_the_target(lms_home, source_gguf, tmp_path):
    target = lms_home / "models" / "me" / "repo" / source_gguf.name
    target.parent.mkdir(parents=True)
    target.symlink_to(tmp_path / "gone.gguf")

    with pytest.raises(ImportError_, match="Target file already exists"):
        plan_import(source_gguf, "me/repo", "symbolic-link")


def test_import_refuses_a_second_import_of_the_same_file(lms_home, source_gguf):
    run_import(plan_import(source_gguf, None, "copy"))

    with pytest.raises(ImportError_, match="already exists"):
        plan_import(source_gguf, None, "copy")


def test_import_of_a_symlinked_file_keeps_the_name_of_the_link(lms_home, tmp_path):
    blob = write_gguf(tmp_path / "blobs" / "5d41402abc4b2a76b9719d911017c592")
    link = tmp_path / "snapshots" / "model-Q4_K_M.gguf"
    link.parent.mkdir()
    link.symlink_to(blob)

    plan = plan_import(link, "me/repo", "copy")

    assert plan.target.name == "model-Q4_K_M.gguf"
