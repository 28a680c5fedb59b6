"""A participant's run through a study: entry, the next item, answers, feedback, the end (no Flask).

Entry keeps only the recruitment platform's URL parameters (URL_PARAMS); a participant id that
already finished is refused, an unfinished one resumes where it stopped. Items come one at a time
in the order assignment.py stored; a question shows the text before the item and nothing after
it. Answers go through the one answer path (webapp.answers) with StudyPolicy, so the run's check
count and its end commit with the answer that caused them.

Comprehension checks are items with a known answer. Their threshold (minimum fraction passed)
is stored with the study; a participant below it is flagged `excluded` with the reason written
out, never removed: their answers stay in the database and in the export.
"""

from __future__ import annotations

import contextlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import answers
from ..answers import (
    AnswerRefused,
    Match,
    Placement,
    StudyAnswerIn,
    expect_kind,
    match_check,
    match_distribution,
    match_pairwise,
    match_token,
    match_word,
)
from ..game import prediction_for
from ..judgements import JUDGEMENT_MODES, Pair, choose_pair, judgement_reveal
from ..lm import Tokenizer
from ..models import (
    AnswerSource,
    Guess,
    Item,
    Participant,
    Player,
    Prediction,
    Study,
    StudyItem,
    utcnow,
)
from ..words import target_word, word_token_ids
from .assignment import answered_items, assign_items
from .setup import allow_skip

URL_PARAMS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "participant")
MAX_PARAM_CHARS = 200


class EntryRefused(Exception):
    """A participant cannot start (or restart) a run; `status` is the HTTP status to use."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def external_id_of(params: dict[str, str]) -> str | None:
    """The recruitment platform's participant id: PROLIFIC_PID, else the generic `participant`."""
    for key in ("PROLIFIC_PID", "participant"):
        value = (params.get(key) or "").strip()
        if value:
            return value[:MAX_PARAM_CHARS]
    return None


def captured_params(args: dict[str, str]) -> dict[str, str]:
    """The URL parameters a study keeps (nothing else from the URL is stored)."""
    return {k: str(args[k]).strip()[:MAX_PARAM_CHARS] for k in URL_PARAMS if str(args.get(k) or "").strip()}


def runs_of(session: Session, study: Study, external_id: str) -> list[Participant]:
    """Every run of the study started with this platform id, oldest first."""
    return list(session.scalars(
        select(Participant)
        .where(Participant.study_id == study.id, Participant.external_id == external_id)
        .order_by(Participant.id)
    ))


def resumable_run(session: Session, study: Study, params: dict[str, str]) -> Participant | None:
    """The run these URL parameters may continue: only one whose platform SESSION_ID matches.

    Why not the platform id alone: it is often known to others (a classmate, a shared screen),
    and whoever resumed with it could answer in someone else's name or finish their run and lock
    them out. A recruitment platform gives each attempt its own SESSION_ID, which is not."""
    params = captured_params(params)
    external_id, session_id = external_id_of(params), params.get("SESSION_ID")
    if external_id is None or not session_id:
        return None
    return next((run for run in runs_of(session, study, external_id)
                 if (run.url_params or {}).get("SESSION_ID") == session_id), None)


def start_participant(
    session: Session, study: Study, params: dict[str, str], *, now: datetime | None = None,
    reservation_minutes: int = 60,
) -> Participant:
    """A new run for a consenting person. A run with the same platform id that this browser
    cannot resume (see `resumable_run`) does not stop it: the new run is flagged
    `duplicate_of` the first one, for the researcher to decide.

    Raises EntryRefused(403) when the study is closed. Flushes; the caller commits.
    """
    now = now or utcnow()
    params = captured_params(params)
    external_id = external_id_of(params)
    if study.status != "open":
        raise EntryRefused("this study is not taking participants at the moment", 403)
    earlier = runs_of(session, study, external_id) if external_id is not None else []
    player = Player(id=secrets.token_hex(8))
    session.add(player)
    session.flush()  # no relationship() links the two: the player row must exist first
    participant = Participant(
        study_id=study.id, player_id=player.id, external_id=external_id, url_params=params,
        pilot=study.pilot, assigned=[], consented_at=now, started_at=now,
        duplicate_of=earlier[0].id if earlier else None,
    )
    session.add(participant)
    session.flush()
    assign_items(session, study, participant, now=now, reservation_minutes=reservation_minutes)
    session.flush()
    return participant


def progress(session: Session, study: Study, participant: Participant) -> tuple[list[StudyItem], int, StudyItem | None]:
    """(assigned study items in order, how many are answered, the next one or None)."""
    by_id = {si.id: si for si in study.items}
    sequence = [by_id[i] for i in participant.assigned or [] if i in by_id]
    answered = answered_items(session, study, [participant.player_id])[participant.player_id]
    done = [si for si in sequence if si.item_id in answered]
    current = next((si for si in sequence if si.item_id not in answered), None)
    return sequence, len(done), current


def question_mode(study: Study, study_item: StudyItem) -> str:
    """How this item is answered: the study's mode, except that a comprehension check in a
    pairwise or distribution study is one typed word (checked against its expected answer)."""
    if study_item.kind == "check" and study.mode in JUDGEMENT_MODES:
        return "word"
    return study.mode


def study_pair(session: Session, study: Study, participant: Participant, item: Item,
               secret: bytes) -> Pair | None:
    """The pair this participant judges at this item (the same every time it is asked for)."""
    prediction = prediction_for(session, item.id, study.model_id) if study.model_id else None
    return choose_pair(prediction.alternatives if prediction else None, item.token_id,
                       f"study:{study.id}:{participant.player_id}:{item.id}", secret)


def study_question_payload(study: Study, study_item: StudyItem, index: int, total: int,
                           pair: dict | None = None) -> dict:
    """What a participant sees before answering: the text before the item, nothing after it
    (in a pairwise study, the two tokens: `pair`, from judgements.pair_payload)."""
    item = study_item.item
    document = item.document
    context = document.text[: item.char_start]
    payload = {
        "study_item_id": study_item.id,
        "index": index,
        "total": total,
        "context": context,
        "prefix_ends_with_space": context[-1:].isspace(),
        "mode": question_mode(study, study_item),
        "ask_probability": study.ask_probability,
        "allow_skip": allow_skip(study),
    }
    if pair is not None:
        payload["pair"] = pair
    return payload


def target_text(study: Study, study_item: StudyItem) -> str:
    """The answer a participant should have given (shown only as feedback, after storing)."""
    item = study_item.item
    if study_item.kind == "check" and study_item.expected_answer:
        return study_item.expected_answer
    if study.mode == "word":
        return target_word(item.document, item)
    return item.token_text


def _feedback(study: Study, study_item: StudyItem, guess: Guess, prediction: Prediction | None,
              tokenizer: Tokenizer) -> dict | None:
    """What the participant is told after an answer is stored, if the study shows feedback at all
    (the model's top token only in token mode, where it is comparable with the answer)."""
    if not study.show_feedback:
        return None
    if study.mode in JUDGEMENT_MODES and study_item.kind == "test":
        return {"skipped": guess.skipped, "target": target_text(study, study_item),
                **judgement_reveal(guess, tokenizer)}
    top = None
    if prediction is not None and study_item.kind == "test":
        shown = [entry for entry in prediction.top_k if not entry[3]][:1]
        if shown:
            top = {"text": shown[0][2], "prob": math.exp(shown[0][1])}
    return {
        "correct": guess.is_correct,
        "skipped": guess.skipped,
        "answer": guess.raw_text,
        "target": target_text(study, study_item),
        "near_miss": guess.match_rule == "first_token_if_space_toggled",
        "model_top": top if study.mode == "token" else None,
    }


def finish_participant(study: Study, participant: Participant, now: datetime) -> None:
    """Mark a run finished and apply the recorded check threshold (flag, never drop)."""
    participant.finished_at = now
    threshold = study.check_threshold
    total, passed = participant.checks_total, participant.checks_passed
    if threshold is not None and total and passed < threshold * total - 1e-9:
        participant.excluded = True
        participant.exclusion_reason = (
            f"passed {passed} of {total} comprehension checks; the study's threshold is "
            f"{threshold:g} ({math.ceil(threshold * total - 1e-9)} of {total})"
        )


@dataclass
class AnswerResult:
    """One submitted answer as the participant API reports it: the stored (or replayed) guess,
    the feedback to show, whether the run has ended, and whether this was a retry."""

    guess: Guess
    feedback: dict | None
    finished: bool
    replayed: bool


class StudyPolicy:
    """Answers in a study: the participant's current item, matched by the study's mode (or as a
    comprehension check); the check count and the end of the run commit with the answer."""

    already_answered = "this item is already answered; reload to continue"

    def __init__(self, study: Study, participant: Participant, secret: bytes = b"") -> None:
        self.study = study
        self.participant = participant
        self.secret = secret  # keys the choice of pair in a pairwise study

    def locate(self, session: Session, answer: StudyAnswerIn) -> Placement:
        study, participant = self.study, self.participant
        if participant.finished_at is not None:
            raise AnswerRefused("you have already completed this study", 409)
        sequence, done, current = progress(session, study, participant)
        if current is None:
            raise AnswerRefused("you have already completed this study", 409)
        if current.id != answer.study_item_id:
            if any(si.id == answer.study_item_id for si in sequence):
                raise AnswerRefused(self.already_answered, 409)
            raise AnswerRefused("this item is not part of your study", 409)
        if answer.skipped and not allow_skip(study):
            raise AnswerRefused("this study asks for an answer to every item", 400)
        if study.ask_probability and not answer.skipped and answer.reported_probability is None:
            raise AnswerRefused("say how likely you think your answer is (0-100%)", 400)
        item = current.item
        prediction = prediction_for(session, item.id, study.model_id) if study.model_id else None
        row = {
            "model_id": study.model_id, "source": AnswerSource.STUDY, "study_id": study.id,
            "mode": question_mode(study, current),
            "reported_probability": None if answer.skipped else answer.reported_probability,
        }
        # answers come in order: the current item is the first open one
        finishes = done + 1 == len(sequence)
        pair = None
        if question_mode(study, current) == "pairwise":
            pair = study_pair(session, study, participant, item, self.secret)
        return Placement(item.id, item.token_id, prediction, row, (current, finishes, pair))

    def match(self, answer: StudyAnswerIn, placement: Placement, tokenizer: Tokenizer) -> Match:
        study_item, _, pair = placement.context
        item = study_item.item
        mode = question_mode(self.study, study_item)
        if mode == "pairwise":
            return match_pairwise(answer, pair, placement.prediction.target_logprob)
        if mode == "distribution":
            return match_distribution(answer, item.token_id, tokenizer, placement.prediction)
        expect_kind(answer, mode)
        if mode == "word" and not answer.skipped:
            word = answer.text.strip()
            token_ids = word_token_ids(tokenizer, item.document.text[: item.char_start], word)
            match = match_word(word, target_word(item.document, item), token_ids)
        else:
            match = match_token(answer.text, item.token_id, tokenizer, answer.skipped)
        if study_item.kind == "check":
            match = match_check(match, answer.text, study_item.expected_answer or "", answer.skipped)
        return match

    def owns(self, guess: Guess, answer: StudyAnswerIn) -> bool:
        if guess.study_id != self.study.id:
            return False
        return any(si.id == answer.study_item_id and si.item_id == guess.item_id
                   for si in self.study.items)

    def stored(self, session: Session, placement: Placement, guess: Guess) -> None:
        study_item, finishes, _ = placement.context
        if study_item.kind == "check":
            self.participant.checks_total += 1
            self.participant.checks_passed += int(guess.is_correct)
        if finishes:
            finish_participant(self.study, self.participant, guess.server_received_at)


def submit_answer(
    session: Session,
    study: Study,
    participant: Participant,
    tokenizer: Tokenizer,
    answer: StudyAnswerIn,
    *,
    received_at: datetime,
    write_lock=contextlib.nullcontext,
    secret: bytes = b"",
) -> AnswerResult:
    """Store (and commit) one answer for the participant's current item through the one answer
    path, or replay it; AnswerRefused for a finished run or an item that is not the current one."""
    result = answers.submit(
        session, StudyPolicy(study, participant, secret), answer, player_id=participant.player_id,
        tokenizer=tokenizer, received_at=received_at, write_lock=write_lock,
    )
    guess = result.guess
    study_item = next(si for si in study.items if si.item_id == guess.item_id)
    prediction = prediction_for(session, guess.item_id, study.model_id) if study.model_id else None
    return AnswerResult(
        guess, _feedback(study, study_item, guess, prediction, tokenizer),
        participant.finished_at is not None, result.replayed,
    )


def redirect_target(study: Study, participant: Participant) -> str:
    url = study.redirect_url or ""
    return url.replace("{code}", study.completion_code).replace("{participant}", participant.external_id or "")
