"""Shared fixtures: the real Gemma model and tokenizer, apps on fresh databases, a live server.

Scoring with the real model costs seconds, so a small corpus is scored once per test session
into a template SQLite file; every test that needs it gets its own copy of that file.
"""

from __future__ import annotations

import secrets
import shutil
import socket
from pathlib import Path

import pytest
from support import (  # noqa: F401
    MODEL_SPEC,
    SHORT_TEXTS,
    TEST_MAX_TOKENS,
    LiveServer,
    build_scored_test_database,
    wait_for_prompt_rooms,
)

from webapp.app import create_app
from webapp.cli import upgrade_database
from webapp.extensions import db
from webapp.lm import load_model, load_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer(MODEL_SPEC)


@pytest.fixture(scope="session")
def gemma():
    """The real Gemma 3 270M base model, opened once (short context keeps memory small)."""
    return load_model(MODEL_SPEC, max_tokens=TEST_MAX_TOKENS, n_threads=2)


def _config(path: Path) -> dict:
    return {
        "DATABASE_URL": f"sqlite:///{path}", "TESTING": True, "SECRET_KEY": "test",
        "MODEL": MODEL_SPEC, "MAX_DOCUMENT_TOKENS": TEST_MAX_TOKENS, "TOP_K": 64,
        "ROOM_ANSWER_BATCH_MS": 0,  # answers reach the host inline; test_rooms_events tests batching
    }


@pytest.fixture
def app(tmp_path):
    """An app on a new, migrated, empty SQLite database."""
    path = tmp_path / "empty.db"
    upgrade_database(f"sqlite:///{path}")
    application = create_app(_config(path))
    yield application
    db.dispose()


@pytest.fixture(scope="session")
def scored_template(tmp_path_factory, tokenizer, gemma) -> Path:
    """A database file holding SHORT_TEXTS, imported and scored by the real model."""
    path = tmp_path_factory.mktemp("template") / "scored.db"
    build_scored_test_database(f"sqlite:///{path}", tokenizer, gemma)
    return path


@pytest.fixture
def scored_app(tmp_path, scored_template):
    """An app on a private copy of the scored database."""
    path = tmp_path / "scored.db"
    shutil.copy(scored_template, path)
    application = create_app(_config(path))
    yield application
    db.dispose()


PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_url(tokenizer, gemma):
    """A fresh PostgreSQL database with the short test corpus imported and scored.

    Needs PostgreSQL and Redis on 127.0.0.1 (`.ci/run` starts them; in CI a skip fails)."""
    if not (_reachable(5432) and _reachable(6379)):
        pytest.skip("PostgreSQL (5432) and Redis (6379) must run on 127.0.0.1 for this test")
    from sqlalchemy import create_engine, text

    name = f"humanlm_test_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        build_scored_test_database(url, tokenizer, gemma)
        yield url
    finally:
        db.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_app(request, tmp_path):
    """The scored test database on SQLite (a file) or on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        application = request.getfixturevalue("scored_app")
        yield application
        return
    url = request.getfixturevalue("pg_url")
    application = create_app({**_config(tmp_path / 'unused.db'), "DATABASE_URL": url})
    yield application
    wait_for_prompt_rooms()  # the fuzzer creates valid prompt rooms
    db.dispose()


@pytest.fixture
def client(scored_app):
    return scored_app.test_client()


@pytest.fixture
def live_server(scored_app):
    """The real app served over HTTP on a free loopback port (for the browser tests)."""
    server = LiveServer(scored_app).start()
    yield server
    server.stop()


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test is a failure: a missing browser or service must not pass silently."""
    import os

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") and skipped and session.exitstatus == 0:
        reporter.write_line(f"CI: {skipped} test(s) skipped; skipped tests fail in CI.", red=True)
        session.exitstatus = 1
