"""judgements: pairwise and stated-distribution answers on the one answer path

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 17:45:00

Two new kinds of answer are stored as rows of `guesses` like every other answer: a pairwise
judgement ("which token really came next?") and a stated distribution (points spread over up to
five candidates and "something else"). What the person saw and said goes in guesses.judgement
(JSON); guesses.mode and studies.mode grow to hold 'distribution'; rooms get an answer mode.
New columns only (and wider ones): existing rows keep their meaning.
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: Union[str, None] = "0011"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("guesses") as batch:
        batch.add_column(sa.Column("judgement", sa.JSON(), nullable=True))
        batch.alter_column("mode", type_=sa.String(20), existing_type=sa.String(10),
                           existing_nullable=False, existing_server_default="token")
    with op.batch_alter_table("studies") as batch:
        batch.alter_column("mode", type_=sa.String(20), existing_type=sa.String(10),
                           existing_nullable=False)
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("answer_mode", sa.String(20), nullable=False,
                                   server_default="token"))


def downgrade() -> None:
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("answer_mode")
    with op.batch_alter_table("studies") as batch:
        batch.alter_column("mode", type_=sa.String(10), existing_type=sa.String(20),
                           existing_nullable=False)
    with op.batch_alter_table("guesses") as batch:
        batch.alter_column("mode", type_=sa.String(10), existing_type=sa.String(20),
                           existing_nullable=False, existing_server_default="token")
        batch.drop_column("judgement")
