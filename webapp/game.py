"""What every mode of play shares (no Flask): how a model token is shown, which scoring run is
active, and a stored prediction. Answer intake and matching are in webapp.answers; the solo
game's flow is in webapp.play.solo, rooms in webapp.rooms, studies in webapp.research."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .lm import Tokenizer, display_text
from .models import Item, LanguageModel, Prediction, ScoredDocument, Study, StudyItem


def token_view(token_id: int, tokenizer: Tokenizer) -> dict:
    return {"id": token_id, "text": display_text(tokenizer.token_bytes(token_id))}


def model_view_of_token(prediction, token_id: int | None) -> tuple[float | None, int | None]:
    """(log-prob, rank) of a token if it is in the stored top-k of `prediction` (anything with a
    `top_k` list of [id, logprob, text, is_control]; None before scoring)."""
    if token_id is None or prediction is None:
        return None, None
    for rank, (tid, logprob, _text, _control) in enumerate(prediction.top_k, 1):
        if tid == token_id:
            return logprob, rank
    return None, None


def known_logprob(prediction, token_id: int | None, true_id: int | None) -> float | None:
    """ln p of a token at a position, where it is known without running the model: the true
    token's (always stored exactly at scoring, `target_logprob`) or one in the stored top-k;
    None otherwise (filled later by a job, never estimated)."""
    if prediction is not None and token_id is not None and token_id == true_id:
        return prediction.target_logprob
    logprob, _rank = model_view_of_token(prediction, token_id)
    return None if logprob is None else float(logprob)


def active_model(session: Session, spec: str) -> LanguageModel | None:
    """The newest scoring run of the configured model that has scored at least one document."""
    return session.scalar(
        select(LanguageModel)
        .where(LanguageModel.spec == spec)
        .where(LanguageModel.id.in_(select(ScoredDocument.model_id)))
        .order_by(LanguageModel.id.desc())
        .limit(1)
    )


def prediction_for(session: Session, item_id: int, model_id: int) -> Prediction | None:
    return session.scalar(
        select(Prediction).where(Prediction.item_id == item_id, Prediction.model_id == model_id)
    )


def documents_in_open_studies():
    """Ids of documents (a SELECT to use in `in_`/`not_in`) holding an item of a study that is
    open (piloting or live). Public play (the solo game, rooms) stays away from the WHOLE
    document, not only the item: a later position's prefix would show the study's answer."""
    return (
        select(Item.document_id)
        .join(StudyItem, StudyItem.item_id == Item.id)
        .join(Study, Study.id == StudyItem.study_id)
        .where(Study.status == "open")
    )
