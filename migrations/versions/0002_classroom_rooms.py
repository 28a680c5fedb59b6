"""classroom rooms: rooms, rounds, seats; guesses.room_id; corpora.purpose

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 23:40:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0002'
down_revision: Union[str, None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('rooms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=12), nullable=False),
    sa.Column('host_token_hash', sa.String(length=64), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('corpus_name', sa.String(length=100), nullable=False),
    sa.Column('join_url', sa.String(length=300), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('phase', sa.String(length=20), nullable=False),
    sa.Column('round_index', sa.Integer(), nullable=False),
    sa.Column('show_histogram', sa.Boolean(), nullable=False),
    sa.Column('show_leaderboard', sa.Boolean(), nullable=False),
    sa.Column('timer_seconds', sa.Integer(), nullable=True),
    sa.Column('deadline', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['model_id'], ['language_models.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('code')
    )
    op.create_table('room_rounds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('room_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('locked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revealed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ),
    sa.ForeignKeyConstraint(['room_id'], ['rooms.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('room_id', 'index', name='uq_room_round')
    )
    with op.batch_alter_table('room_rounds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_room_rounds_room_id'), ['room_id'], unique=False)

    op.create_table('room_players',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('room_id', sa.Integer(), nullable=False),
    sa.Column('player_id', sa.String(length=32), nullable=False),
    sa.Column('nickname', sa.String(length=40), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('connected', sa.Boolean(), nullable=False),
    sa.Column('removed', sa.Boolean(), nullable=False),
    sa.Column('joined_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['player_id'], ['players.id'], ),
    sa.ForeignKeyConstraint(['room_id'], ['rooms.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash', name='uq_room_player_token')
    )
    with op.batch_alter_table('room_players', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_room_players_room_id'), ['room_id'], unique=False)

    with op.batch_alter_table('corpora', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purpose', sa.String(length=20), server_default='game', nullable=False))

    with op.batch_alter_table('guesses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('room_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_guesses_room_id'), ['room_id'], unique=False)
        batch_op.create_unique_constraint('uq_guess_room_answer', ['room_id', 'player_id', 'item_id'])
        batch_op.create_foreign_key('fk_guesses_room_id_rooms', 'rooms', ['room_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('guesses', schema=None) as batch_op:
        batch_op.drop_constraint('fk_guesses_room_id_rooms', type_='foreignkey')
        batch_op.drop_constraint('uq_guess_room_answer', type_='unique')
        batch_op.drop_index(batch_op.f('ix_guesses_room_id'))
        batch_op.drop_column('room_id')

    with op.batch_alter_table('corpora', schema=None) as batch_op:
        batch_op.drop_column('purpose')

    with op.batch_alter_table('room_players', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_room_players_room_id'))
    op.drop_table('room_players')
    with op.batch_alter_table('room_rounds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_room_rounds_room_id'))
    op.drop_table('room_rounds')
    op.drop_table('rooms')
