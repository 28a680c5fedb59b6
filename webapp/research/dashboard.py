"""What a researcher sees of a study: headline numbers, per-item fill and a fill histogram (no Flask).

Read-only: nothing here changes a study. Counts come from assignment.response_counts, so the
dashboard shows the same "filled" a new participant's assignment is balanced on (responses of
non-pilot, non-excluded participants; reservations of unfinished runs are not shown as filled).
"""

from __future__ import annotations

import statistics
from collections import Counter

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from ..models import Guess, Item, Participant, Prediction, Study, StudyItem
from .assignment import response_counts
from .participants import target_text


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _answers_of(session: Session, study: Study, players) -> dict:
    """Accuracy, skips and the median answer time of the test answers of some participants
    (`players`: a SELECT of player ids), with the model scored on the same answers."""
    test_items = select(StudyItem.item_id).where(StudyItem.study_id == study.id, StudyItem.kind == "test")
    row = session.execute(
        select(
            func.count(Guess.id),
            func.coalesce(func.sum(cast(Guess.is_correct, Integer)), 0),
            func.coalesce(func.sum(cast(Prediction.top1_id == Item.token_id, Integer)), 0),
            func.coalesce(func.sum(cast(Guess.skipped, Integer)), 0),
        )
        .select_from(Guess)
        .join(Item, Guess.item_id == Item.id)
        .join(Prediction, (Prediction.item_id == Guess.item_id) & (Prediction.model_id == Guess.model_id), isouter=True)
        .where(Guess.study_id == study.id, Guess.player_id.in_(players), Guess.item_id.in_(test_items))
    ).one()
    n, human, model_ok, skips = row
    reaction = list(session.scalars(
        select(Guess.client_reaction_ms).where(
            Guess.study_id == study.id, Guess.player_id.in_(players), Guess.item_id.in_(test_items),
            Guess.client_reaction_ms.is_not(None),
        )
    ))
    return {
        "accuracy": {
            "n": n,
            "human": human / n if n else None,
            "model": model_ok / n if n else None,
            "skipped": skips,
        },
        "median_reaction_ms": _median(reaction),
    }


def _minutes(participants: list[Participant]) -> list[float]:
    return [
        (p.finished_at - (p.consented_at or p.started_at)).total_seconds() / 60
        for p in participants if p.finished_at is not None and not p.excluded
    ]


def study_summary(session: Session, study: Study) -> dict:
    """Headline numbers for the dashboard: participants, fill, times, human vs model accuracy.

    Counts and accuracies use non-pilot participants; accuracy and fill also leave out excluded
    ones (pilot and excluded counts are shown beside them). Skips count as wrong. The model is
    "correct" at an item when its top-1 token is the true token (word mode: the word's first
    token), counted over the same responses as the people, so both are on the same positions.
    `pilot` holds the same figures for the pilot participants (excluded pilots left out of
    accuracy and times, as for the live ones), shown beside the live figures, never mixed in.
    """
    participants = list(session.scalars(select(Participant).where(Participant.study_id == study.id)))
    real = [p for p in participants if not p.pilot]
    pilots = [p for p in participants if p.pilot]
    counts = response_counts(session, study)
    target = study.target_responses
    n_items = len(counts)
    kept = select(Participant.player_id).where(
        Participant.study_id == study.id, Participant.pilot.is_(False), Participant.excluded.is_(False)
    )
    kept_pilots = select(Participant.player_id).where(
        Participant.study_id == study.id, Participant.pilot.is_(True), Participant.excluded.is_(False)
    )
    live = _answers_of(session, study, kept)
    pilot = _answers_of(session, study, kept_pilots)
    checks_total = sum(p.checks_total for p in real)
    fill = sorted(counts.values())
    return {
        "participants": {
            "started": len(real),
            "finished": sum(p.finished_at is not None for p in real),
            "in_progress": sum(p.finished_at is None for p in real),
            "excluded": sum(p.excluded for p in real),
            "pilot": len(pilots),
        },
        "responses": {
            "total": sum(fill),
            "target_per_item": target,
            "items": n_items,
            "items_at_target": sum(c >= target for c in fill),
            "min": fill[0] if fill else 0,
            "median": _median(fill) or 0,
            "max": fill[-1] if fill else 0,
            "needed": sum(max(0, target - c) for c in fill),
        },
        "median_minutes": _median(_minutes(real)),
        "median_reaction_ms": live["median_reaction_ms"],
        "accuracy": live["accuracy"],
        "checks": {
            "total": checks_total,
            "passed": sum(p.checks_passed for p in real),
            "threshold": study.check_threshold,
        },
        "pilot": {
            "started": len(pilots),
            "finished": sum(p.finished_at is not None for p in pilots),
            "in_progress": sum(p.finished_at is None for p in pilots),
            "excluded": sum(p.excluded for p in pilots),
            "responses": pilot["accuracy"]["n"],
            "median_minutes": _median(_minutes(pilots)),
            "median_reaction_ms": pilot["median_reaction_ms"],
            "accuracy": pilot["accuracy"],
            "checks": {"total": sum(p.checks_total for p in pilots),
                       "passed": sum(p.checks_passed for p in pilots)},
        },
        "pilot_mode": study.pilot,
        "status": study.status,
    }


def item_fill_rows(session: Session, study: Study) -> list[dict]:
    """Per test item: its text position and responses against the target, least filled first."""
    counts = response_counts(session, study)
    rows = []
    for si in study.items:
        if si.kind != "test":
            continue
        item = si.item
        rows.append({
            "study_item_id": si.id, "item_id": item.id, "document": item.document.title,
            "position": item.position,
            "context_tail": _tail(item.document.text[: item.char_start]),
            "target": target_text(study, si), "responses": counts.get(si.id, 0),
        })
    rows.sort(key=lambda r: (r["responses"], r["item_id"]))
    return rows


def _tail(text: str, chars: int = 48) -> str:
    """The end of a prefix, cut at a word boundary: what a reader needs to place the item."""
    if len(text) <= chars:
        return text
    tail = text[-chars:]
    cut = tail.find(" ")
    return tail[cut + 1 :] if 0 <= cut < chars // 2 else tail


def fill_histogram(session: Session, study: Study) -> list[tuple[int, int]]:
    """(responses, number of items with that many) for every count from 0 to the target (or the
    largest count, if higher), so empty columns show how far the study is from its target."""
    counts = Counter(response_counts(session, study).values())
    if not counts:
        return []
    top = max(max(counts), study.target_responses)
    return [(n, counts.get(n, 0)) for n in range(top + 1)]

