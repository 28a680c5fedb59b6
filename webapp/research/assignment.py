"""Which items a participant gets: balanced assignment from fill counts (no Flask).

A participant who consents gets `items_per_participant` test items chosen least-filled first (so
every item approaches `target_responses`), plus every comprehension check; the choice and its
order come from a seed derived from the study's stored seed and the participant's id, and what
was assigned is stored (`Participant.assigned`), so a run can always be reconstructed.

Counting "filled": an item's count is its responses from non-pilot, non-excluded participants,
plus the items still waiting in the assignments of non-pilot participants who started within
the last `reservation_minutes` and have not finished. Without that reservation, the dozens of
people a recruitment platform sends in the same minute would all see the same "least filled"
items, because nobody has answered yet. Pilot participants never count.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..models import AnswerSource, Guess, Participant, Study


def answered_items(session: Session, study: Study, player_ids: list[str]) -> dict[str, set[int]]:
    """Item ids each player has answered in this study."""
    out: dict[str, set[int]] = {pid: set() for pid in player_ids}
    if not player_ids:
        return out
    rows = session.execute(
        select(Guess.player_id, Guess.item_id).where(
            Guess.study_id == study.id, Guess.player_id.in_(player_ids)
        )
    )
    for player_id, item_id in rows:
        out[player_id].add(item_id)
    return out


def response_counts(session: Session, study: Study) -> dict[int, int]:
    """Responses per StudyItem id from non-pilot, non-excluded participants (test items only)."""
    by_item = {si.item_id: si.id for si in study.items if si.kind == "test"}
    rows = session.execute(
        select(Guess.item_id, func.count(Guess.id))
        .join(Participant, (Participant.player_id == Guess.player_id) & (Participant.study_id == study.id))
        .where(
            Guess.study_id == study.id, Guess.source == AnswerSource.STUDY,
            Participant.pilot.is_(False), Participant.excluded.is_(False),
        )
        .group_by(Guess.item_id)
    )
    counts = {si_id: 0 for si_id in by_item.values()}
    for item_id, n in rows:
        if item_id in by_item:
            counts[by_item[item_id]] = n
    return counts


def fill_counts(session: Session, study: Study, *, now: datetime, reservation_minutes: int) -> dict[int, int]:
    """Responses per test StudyItem plus the reservations of recent unfinished participants."""
    counts = response_counts(session, study)
    since = now - timedelta(minutes=reservation_minutes)
    waiting = [
        p for p in session.scalars(
            select(Participant).where(
                Participant.study_id == study.id, Participant.finished_at.is_(None),
                Participant.pilot.is_(False), Participant.excluded.is_(False),
            )
        )
        if p.started_at >= since
    ]
    answered = answered_items(session, study, [p.player_id for p in waiting])
    item_of = {si.id: si.item_id for si in study.items}
    for p in waiting:
        for si_id in p.assigned or []:
            if si_id in counts and item_of[si_id] not in answered[p.player_id]:
                counts[si_id] += 1
    return counts


def participant_rng(study: Study, participant: Participant) -> random.Random:
    """The participant's own random stream, reproducible from the study's stored seed."""
    return random.Random(f"{study.seed}:{participant.id}")


def assign_items(session: Session, study: Study, participant: Participant, *, now: datetime,
                 reservation_minutes: int) -> list[int]:
    """Choose and order the participant's StudyItems; stores and returns their ids."""
    rng = participant_rng(study, participant)
    tests = [si for si in study.items if si.kind == "test"]
    checks = [si for si in study.items if si.kind == "check"]
    counts = fill_counts(session, study, now=now, reservation_minutes=reservation_minutes)
    tiebreak = {si.id: rng.random() for si in tests}
    ranked = sorted(tests, key=lambda si: (counts.get(si.id, 0), tiebreak[si.id]))
    chosen = ranked[: study.items_per_participant]
    if study.order == "random":
        sequence = chosen + checks
        rng.shuffle(sequence)
    else:
        sequence = sorted(chosen, key=lambda si: si.order)
        for j, check in enumerate(checks):  # spread evenly: after about every n/(m+1) items
            at = round((j + 1) * len(chosen) / (len(checks) + 1)) + j
            sequence.insert(at, check)
    participant.assigned = [si.id for si in sequence]
    return participant.assigned

