"""top-k-only predictions: entropy and log Z may be absent

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 15:10:00

A model served through an OpenAI-compatible server (the openai: backend) returns only its top-k
log-probs: the entropy and log Z(T) of its full distribution are not known, and they are stored
as NULL, never estimated from the top-k (the model's settings say top_k_only). Its rank of a
target beyond the top-k is NULL too (target_rank is nullable since 0009). Nothing else changes.

Downgrading makes the columns NOT NULL again, which a database holding such predictions cannot
be: the downgrade stops and says how many rows are in the way.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

from webapp.cli import MigrationRefused

revision: str = "0010"
down_revision: Union[str, None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _alter(nullable: bool) -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.alter_column("entropy", existing_type=sa.Float(), nullable=nullable)
        batch.alter_column("logz", existing_type=sa.JSON(), nullable=nullable)


def upgrade() -> None:
    _alter(True)


def downgrade() -> None:
    n = op.get_bind().execute(
        sa.text("SELECT COUNT(*) FROM predictions WHERE entropy IS NULL OR logz IS NULL")
    ).scalar()
    if n:
        raise MigrationRefused(
            f"cannot downgrade below 0010: {n} predictions come from a top-k-only model (no "
            "entropy or log Z). Export your data first, then delete that model's predictions."
        )
    _alter(False)
