"""Unit tests of lms/config.py: where state lives, and that the private folders are the owner's alone."""

from __future__ import annotations

from lms import config


def test_private_folders_are_made_and_kept_owner_only(tmp_path, monkeypatch):
    monkeypatch.setenv("LMS_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "server-logs").mkdir(parents=True, mode=0o755)  # left open by an older version
    for folder in (config.internal_dir(), config.logs_dir()):
        assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700
    assert config.models_dir() == tmp_path / "home" / "models"
