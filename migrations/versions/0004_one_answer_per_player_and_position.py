"""one answer per player and position, enforced by a unique index in every live mode

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 11:20:00

Until now only room answers had such a constraint; concurrent submits in the solo game and in
studies could store two answers for one position. A database that already holds such pairs is
not changed silently: the upgrade stops and says which rows to look at, so nobody's data is
deleted or re-labelled by a migration.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

from webapp.cli import MigrationRefused

revision: str = "0004"
down_revision: Union[str, None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

LIVE = "source != 'external'"


def upgrade() -> None:
    duplicates = op.get_bind().execute(sa.text(
        f"SELECT player_id, item_id, COUNT(*) FROM guesses WHERE {LIVE} "
        "GROUP BY player_id, item_id HAVING COUNT(*) > 1 LIMIT 5"
    )).all()
    if duplicates:
        shown = ", ".join(f"player {p} item {i} ({n} rows)" for p, i, n in duplicates)
        raise MigrationRefused(
            "cannot add the one-answer-per-position index: some players have several answers "
            f"for the same position ({shown}, ...). Export your data first, then decide which "
            "rows to keep: SELECT * FROM guesses WHERE (player_id, item_id) IN (SELECT player_id, "
            f"item_id FROM guesses WHERE {LIVE} GROUP BY 1, 2 HAVING COUNT(*) > 1)"
        )
    op.create_index(
        "uq_guess_one_answer", "guesses", ["player_id", "item_id"], unique=True,
        sqlite_where=sa.text(LIVE), postgresql_where=sa.text(LIVE),
    )


def downgrade() -> None:
    op.drop_index("uq_guess_one_answer", table_name="guesses")
