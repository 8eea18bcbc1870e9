"""The SQL seam (lms/db.py) without a server: masking a database URL's password, URLs refused before any
connection, and the SQLite side of transactions and migrations. tests/test_postgres.py runs PostgreSQL itself."""

from __future__ import annotations

import pytest

from lms import db


@pytest.mark.parametrize("url, shown", [
    ("postgresql://lms:hunter22@db:5432/lms", "postgresql://lms:***@db:5432/lms"),
    ("postgresql://lms:p%40ss%2Fword@db/lms?sslmode=require", "postgresql://lms:***@db/lms?sslmode=require"),
    ("postgresql://lms:hun@ter22@[::1/lms", "postgresql://lms:***@[::1/lms"),  # unencoded @, not even a URL
    ("postgresql://lms@db/lms", "postgresql://lms@db/lms"),
    ("postgresql://db:5432/lms", "postgresql://db:5432/lms"),
    ("host=db user=lms password=hunter22 dbname=x", "host=db user=lms password=*** dbname=x"),
    ("host=db password='a b c' user=lms", "host=db password=*** user=lms"),
])
def test_the_password_is_masked(url, shown):
    assert db.mask(url) == shown


def test_a_url_that_is_not_postgresql_is_refused_without_its_password():
    for url in ["mysql://lms:hunter22@db/lms", "sqlite:///x.db", "hunter22"]:
        with pytest.raises(db.DatabaseError) as refused:
            db.connect(url)
        assert "postgresql://" in refused.value.message and "hunter22" not in refused.value.message
        assert refused.value.code == "database_unavailable"


def test_the_configured_url_comes_from_the_variable_else_settings_json(lms_home, monkeypatch):
    monkeypatch.delenv("LMS_DATABASE_URL", raising=False)
    lms_home.mkdir()
    assert db.configured_url() == "" and db.configured() is None
    (lms_home / "settings.json").write_text('{"database_url": "postgresql://from-file/db"}')
    assert db.configured_url() == "postgresql://from-file/db"
    monkeypatch.setenv("lms_database_url", "postgresql://from-env/db")
    assert db.configured_url() == "postgresql://from-env/db"


def test_sqlite_transactions_roll_back_whole_and_migrations_run_once(tmp_path):
    calls = []

    def v1(database):
        calls.append(1)
        database.execute(f"CREATE TABLE t (x {db.dialect_of(database).float_type}{database.dialect.rowid_column})")

    def v2(database):
        calls.append(2)
        database.execute("ALTER TABLE t ADD COLUMN y TEXT")

    first = db.SQLiteDatabase(tmp_path / "x.db")
    assert first.migrate("t", [v1]) == 0 and first.migrate("t", [v1, v2]) == 1 and first.migrate("t", [v1, v2]) == 2
    assert calls == [1, 2]
    with pytest.raises(RuntimeError):
        with first.transaction():
            first.execute("INSERT INTO t (x, y) VALUES (?, ?)", (1.5, "a"))
            with first.transaction():  # joins the outer one
                first.execute("INSERT INTO t (x, y) VALUES (?, ?)", (2.5, "b"))
            raise RuntimeError("undo both")
    again = db.SQLiteDatabase(tmp_path / "x.db")
    assert again.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    assert again.migrate("t", [v1, v2]) == 2 and calls == [1, 2]
