"""stems without a true continuation: items, predictions and answers may lack a target

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 14:50:00

Published norms are often sentence stems that people completed, with no "true" next word.
Such a stem is an item one past the last token of its document (position == n_tokens) with no
true token: items.token_id and items.token_text are NULL there, its prediction has no
target_logprob or target_rank, and the answers to it have no is_correct. Nothing else changes.

Downgrading makes the columns NOT NULL again, which a database holding stems cannot be: the
downgrade stops and says how many rows are in the way, so no imported data is deleted by a
migration.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

from webapp.cli import MigrationRefused

revision: str = "0009"
down_revision: Union[str, None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = {
    "items": (("token_id", sa.Integer()), ("token_text", sa.String(length=200))),
    "predictions": (("target_logprob", sa.Float()), ("target_rank", sa.Integer())),
    "guesses": (("is_correct", sa.Boolean()),),
}


def _alter(nullable: bool) -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for name, type_ in columns:
                batch.alter_column(name, existing_type=type_, nullable=nullable)


def upgrade() -> None:
    _alter(True)


def downgrade() -> None:
    bind = op.get_bind()
    in_the_way = []
    for table, columns in COLUMNS.items():
        where = " OR ".join(f"{name} IS NULL" for name, _type in columns)
        n = bind.execute(sa.text(f"SELECT COUNT(*) FROM {table} WHERE {where}")).scalar()
        if n:
            in_the_way.append(f"{table}: {n}")
    if in_the_way:
        raise MigrationRefused(
            "cannot downgrade below 0009: the database holds stems without a true continuation "
            f"(rows with an empty target: {', '.join(in_the_way)}). Export your data first, then "
            "delete the corpora imported as stems (items with token_id IS NULL)."
        )
    _alter(False)
