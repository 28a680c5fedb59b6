"""study runs bound to their browser: several runs may share a platform id, later ones flagged

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 11:40:00
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("participants") as batch:
        batch.drop_constraint("uq_participant_external", type_="unique")
        batch.add_column(sa.Column("duplicate_of", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_participants_duplicate_of", "participants", ["duplicate_of"], ["id"],
            ondelete="SET NULL",
        )
        batch.create_index("ix_participants_study_external", ["study_id", "external_id"])


def downgrade() -> None:
    with op.batch_alter_table("participants") as batch:
        batch.drop_index("ix_participants_study_external")
        batch.drop_constraint("fk_participants_duplicate_of", type_="foreignkey")
        batch.drop_column("duplicate_of")
        batch.create_unique_constraint("uq_participant_external", ["study_id", "external_id"])
