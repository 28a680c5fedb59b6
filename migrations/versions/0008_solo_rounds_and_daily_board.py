"""solo rounds (result cards, the daily passage) and nicknames for the daily board

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 12:30:00
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


revision: str = "0008"
down_revision: Union[str, None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "play_rounds",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("player_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=True),
        sa.Column("difficulty", sa.String(length=10), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["player_id"], ["players.id"]),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_play_rounds_player_id", "play_rounds", ["player_id"])
    op.create_index("ix_play_rounds_day", "play_rounds", ["kind", "day"])
    op.create_table(
        "play_round_guesses",
        sa.Column("round_id", sa.String(length=24), nullable=False),
        sa.Column("guess_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["round_id"], ["play_rounds.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["guess_id"], ["guesses.id"]),
        sa.PrimaryKeyConstraint("round_id", "guess_id"),
        sa.UniqueConstraint("guess_id"),
    )
    op.create_table(
        "player_nicknames",
        sa.Column("player_id", sa.String(length=32), nullable=False),
        sa.Column("nickname", sa.String(length=40), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["player_id"], ["players.id"]),
        sa.PrimaryKeyConstraint("player_id"),
    )


def downgrade() -> None:
    op.drop_table("player_nicknames")
    op.drop_table("play_round_guesses")
    op.drop_index("ix_play_rounds_day", table_name="play_rounds")
    op.drop_index("ix_play_rounds_player_id", table_name="play_rounds")
    op.drop_table("play_rounds")
