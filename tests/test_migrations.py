"""Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from webapp.cli import alembic_config
from webapp.models import Base


def _upgraded(tmp_path, revision="head"):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, revision)
    return url, cfg


def test_single_head():
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1


def test_upgrade_creates_exactly_the_model_tables(tmp_path):
    url, _cfg = _upgraded(tmp_path)
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        tables = set(inspector.get_table_names()) - {"alembic_version"}
        assert tables == set(Base.metadata.tables)
        for name, table in Base.metadata.tables.items():
            assert {c["name"] for c in inspector.get_columns(name)} == set(table.columns.keys()), name
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        assert current == ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    finally:
        engine.dispose()


def test_migrations_match_models(tmp_path):
    url, _cfg = _upgraded(tmp_path)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert diff == [], diff
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_downgrade_removes_everything(tmp_path):
    url, cfg = _upgraded(tmp_path)
    command.upgrade(cfg, "head")  # again: nothing to do, no error
    command.downgrade(cfg, "base")
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    command.upgrade(cfg, "head")
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set(Base.metadata.tables)
    finally:
        engine.dispose()


def test_one_answer_index_refuses_a_database_with_duplicate_answers(tmp_path):
    """Migration 0004 names existing duplicates and changes nothing, instead of failing deep in
    the database or deleting someone's data."""
    from datetime import UTC, datetime

    import click
    import pytest
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from webapp.cli import upgrade_database
    from webapp.models import Document, Item, Player

    url, _cfg = _upgraded(tmp_path, "0003")
    engine = create_engine(url)
    with Session(engine) as session:
        # the corpora table has gained columns since 0003: the corpus row is written by hand
        corpus_id = session.execute(text(
            "INSERT INTO corpora (name, description, min_prefix_tokens, created_at) "
            "VALUES ('c', '', 3, '2026-01-01 00:00:00') RETURNING id"
        )).scalar()
        doc = Document(corpus_id=corpus_id, text="a b", content_hash="h", tokenizer="t",
                       token_ids=[1, 2], n_tokens=2)
        item = Item(document=doc, position=1, token_id=2, token_text=" b", char_start=1, playable=True)
        session.add_all([doc, item, Player(id="p")])
        session.flush()
        for key in ("key-one-1", "key-two-2"):  # guesses has gained a column since 0003
            session.execute(text(
                "INSERT INTO guesses (client_key, player_id, item_id, raw_text, token_ids, "
                "multi_token, skipped, is_correct, match_rule, server_received_at, stored_at, source, mode) "
                "VALUES (:key, 'p', :item, '', '[]', 0, 0, 0, 'none', :now, :now, 'game', 'token')"
            ), {"key": key, "item": item.id, "now": datetime.now(UTC).isoformat(" ")})
        session.commit()
    with pytest.raises(click.ClickException) as refused:
        upgrade_database(url)
    assert "player p item 1 (2 rows)" in refused.value.message
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0003"
        assert conn.execute(text("SELECT COUNT(*) FROM guesses")).scalar() == 2
    engine.dispose()
