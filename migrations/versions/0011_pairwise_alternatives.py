"""pairwise alternatives: tokens drawn from the model's distribution at scoring time

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 15:40:00

A corpus can ask for n tokens per position drawn from the scoring model's full distribution at
T = 1 (corpora.pairwise_alternatives, with corpora.alternatives_seed), the proposals of the
pairwise game ("which token really came next?"); they are stored with their exact log-probs on
the prediction (predictions.alternatives, JSON), so the web layer never runs the model.
New columns only: existing rows keep 0 alternatives and NULL.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: Union[str, None] = "0010"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("corpora") as batch:
        batch.add_column(sa.Column("pairwise_alternatives", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("alternatives_seed", sa.Integer(), nullable=True))
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("alternatives", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("alternatives")
    with op.batch_alter_table("corpora") as batch:
        batch.drop_column("alternatives_seed")
        batch.drop_column("pairwise_alternatives")
