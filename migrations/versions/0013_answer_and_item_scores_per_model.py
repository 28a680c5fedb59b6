"""every answer's and item's numbers under every model, by each model's own tokens

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 18:30:00

answer_model_scores: one row per (answer, model), ln p_M(answer text | prefix text) by the chain
rule over the model's own tokenization (comparable across tokenizers), its token count and
word-end term, and the first-token numbers where the model's tokenizer is the corpus's.
item_model_scores: one row per (answered item, model), the true next token's and word's
log-probs the same way, the entropy, the most likely next token and whether it begins the true
word. New tables only: nothing existing changes (webapp.predictions.fill_model_scores fills them).
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: Union[str, None] = "0012"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "answer_model_scores",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("guess_id", sa.Integer(), sa.ForeignKey("guesses.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("model_id", sa.Integer(),
                  sa.ForeignKey("language_models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("logprob", sa.Float(), nullable=True),
        sa.Column("n_tokens", sa.Integer(), nullable=False),
        sa.Column("end_logprob", sa.Float(), nullable=True),
        sa.Column("first_token_logprob", sa.Float(), nullable=True),
        sa.Column("first_token_rank", sa.Integer(), nullable=True),
        sa.Column("same_tokenizer", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("guess_id", "model_id", name="uq_answer_model_score"),
    )
    op.create_index("ix_answer_model_scores_model_id", "answer_model_scores", ["model_id"])
    op.create_table(
        "item_model_scores",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("items.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("model_id", sa.Integer(),
                  sa.ForeignKey("language_models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("target_logprob", sa.Float(), nullable=True),
        sa.Column("target_n_tokens", sa.Integer(), nullable=True),
        sa.Column("target_word_logprob", sa.Float(), nullable=True),
        sa.Column("target_word_end_logprob", sa.Float(), nullable=True),
        sa.Column("entropy", sa.Float(), nullable=True),
        sa.Column("top1_text", sa.String(200), nullable=True),
        sa.Column("top1_starts_word", sa.Boolean(), nullable=True),
        sa.Column("same_tokenizer", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("item_id", "model_id", name="uq_item_model_score"),
    )
    op.create_index("ix_item_model_scores_model_id", "item_model_scores", ["model_id"])


def downgrade() -> None:
    op.drop_index("ix_item_model_scores_model_id", table_name="item_model_scores")
    op.drop_table("item_model_scores")
    op.drop_index("ix_answer_model_scores_model_id", table_name="answer_model_scores")
    op.drop_table("answer_model_scores")
