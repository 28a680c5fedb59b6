"""Online studies on the database scored by the real model: validation, balanced assignment,
pilots, the participant journey over HTTP (consent, answers, resume, duplicates, completion),
comprehension checks and the feedback setting. No mocks of the model or the database."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from research_helpers import (
    BASE_SPEC,
    MODEL_SPEC,
    answer,
    consent,
    current,
    make_study,
    participants,
    run_through,
    study_row,
)
from sqlalchemy import func, select

from webapp.answers import StudyAnswerIn, model_view_of_token
from webapp.extensions import db
from webapp.game import active_model, prediction_for
from webapp.lm import load_tokenizer
from webapp.models import Corpus, Document, Guess, Item, Participant, Study, StudyItem
from webapp.research.assignment import assign_items, fill_counts, response_counts
from webapp.research.dashboard import study_summary
from webapp.research.participants import progress, start_participant, submit_answer
from webapp.research.setup import CHECKS_CORPUS, StudyError, create_study, eligible_items, set_pilot
from webapp.words import target_word

pytestmark = pytest.mark.model


@pytest.fixture
def dbs(scored_app):
    """A session on the test's database. No app context stays pushed while the test runs: each
    request must get its own (as in production), or Flask-WTF would reuse one CSRF token in `g`."""
    with scored_app.app_context():
        session = db.new_session()
    yield session
    session.close()


def _create(dbs, **spec):
    return create_study(dbs, {**BASE_SPEC, **spec}, model=active_model(dbs, MODEL_SPEC),
                        tokenizer=load_tokenizer(MODEL_SPEC))


def _errors(dbs, spec: dict) -> dict[str, str]:
    with pytest.raises(StudyError) as info:
        create_study(dbs, spec, model=active_model(dbs, MODEL_SPEC), tokenizer=load_tokenizer(MODEL_SPEC))
    dbs.rollback()
    return info.value.errors


def _eligible(dbs, mode="token") -> list[Item]:
    corpus = dbs.scalar(select(Corpus).where(Corpus.name == "tests"))
    return eligible_items(dbs, corpus, active_model(dbs, MODEL_SPEC), mode)


# ---------------------------------------------------------------------------------- validation


def test_a_valid_study_stores_its_items_checks_and_settings(dbs):
    study = _create(dbs, name="Valid", seed=42, checks=["Type the word blue here: | blue"],
                    check_threshold=1, show_feedback=True, redirect_url="https://example.org/done?cc={code}",
                    completion_code="C0DE")
    dbs.commit()
    tests = [si for si in study.items if si.kind == "test"]
    checks = [si for si in study.items if si.kind == "check"]
    assert len(tests) == len(_eligible(dbs)) > 10
    assert len(checks) == 1 and checks[0].expected_answer == "blue"
    assert checks[0].item.token_text == " blue" and checks[0].item.document.corpus.purpose == "study_checks"
    assert study.seed == 42 and study.show_feedback and study.check_threshold == 1.0
    assert study.slug.startswith("valid-")
    settings = study.settings
    assert settings["seed"] == 42 and settings["show_feedback"] is True and settings["check_threshold"] == 1.0
    assert settings["model"]["spec"] == MODEL_SPEC and settings["n_test_items"] == len(tests)
    assert settings["checks"] == [{"item_id": checks[0].item_id, "expected_answer": "blue"}]


def test_every_bad_field_is_named_and_nothing_is_stored(dbs):
    errors = _errors(dbs, {"corpus": "tests", "show_feeback": True, "mode": "letters",
                           "order": "shuffled", "items_per_participant": 0, "check_threshold": 1.5,
                           "redirect_url": "javascript:alert(1)", "checks": ["no bar here"],
                           "seed": "abc", "target_responses": True})
    for field in ("name", "consent_text", "show_feeback", "mode", "order", "items_per_participant",
                  "check_threshold", "redirect_url", "checks[0]", "seed", "target_responses"):
        assert field in errors, (field, errors)
    assert "unknown setting" in errors["show_feeback"]
    assert dbs.scalar(select(func.count(Study.id))) == 0
    assert dbs.scalar(select(func.count(Corpus.id)).where(Corpus.name == CHECKS_CORPUS)) == 0


def test_a_refused_study_leaves_no_check_documents(dbs):
    errors = _errors(dbs, {**BASE_SPEC, "checks": ["Type the word green: | green"], "items_per_participant": 400})
    assert "items_per_participant" in errors and "only" in errors["items_per_participant"]
    assert dbs.scalar(select(func.count(Document.id)).join(Corpus).where(Corpus.name == CHECKS_CORPUS)) == 0


@pytest.mark.parametrize(
    ("spec", "field", "needle"),
    [
        ({"corpus": "nope"}, "corpus", "no corpus 'nope'"),
        ({"items": {"sample": 0}}, "items", "between 1 and"),
        ({"items": [{"document": "Fox", "position": 999}]}, "items[0]", "no position 999"),
        ({"items": [{"document": "Nope", "position": 3}]}, "items[0]", "no document"),
        ({"items": ["x"]}, "items[0]", "item id"),
        ({"check_threshold": 0.5}, "check_threshold", "no comprehension checks"),
        ({"checks": ["| only an answer"]}, "checks[0]", "both sides"),
        ({"slug": "Bad Slug!"}, "slug", "lowercase"),
        ({"completion_code": "x" * 101}, "completion_code", "longer than 100"),
    ],
)
def test_validation_names_the_field(dbs, spec, field, needle):
    errors = _errors(dbs, {**BASE_SPEC, **spec})
    assert field in errors and needle in errors[field], errors


def test_duplicate_slug_and_duplicate_items_are_refused(dbs):
    _create(dbs, slug="same-link")
    dbs.commit()
    assert "already exists" in _errors(dbs, {**BASE_SPEC, "slug": "same-link"})["slug"]
    first = _eligible(dbs)[0]
    errors = _errors(dbs, {**BASE_SPEC, "items": [first.id, first.id], "items_per_participant": 1})
    assert "listed twice" in errors["items[1]"]


def test_explicit_items_by_document_title_and_sample(dbs):
    fox = dbs.scalar(select(Document).where(Document.title == "Fox"))
    playable = [it for it in fox.items if it.playable][:3]
    study = _create(dbs, items=[{"document": "Fox", "position": it.position} for it in playable],
                    items_per_participant=2, order="fixed")
    assert [si.item_id for si in study.items] == [it.id for it in playable]
    sampled_a = _create(dbs, items={"sample": 5}, seed=7, items_per_participant=2)
    sampled_b = _create(dbs, items={"sample": 5}, seed=7, items_per_participant=2)
    assert [si.item_id for si in sampled_a.items] == [si.item_id for si in sampled_b.items]
    assert len(sampled_a.items) == 5


def test_word_mode_uses_word_starts_only(dbs):
    study = _create(dbs, mode="word")
    assert study.items
    for si in study.items:
        item = si.item
        word = target_word(item.document, item)
        assert word[:1].isalnum() and item.token_text.lstrip()[:1].isalnum()
        before = item.document.text[item.char_start - 1] if item.char_start else " "
        assert item.token_text[:1].isspace() or before.isspace()
    assert len(study.items) < len(_eligible(dbs, "token"))


# ---------------------------------------------------------------------------------- assignment


def _finish(dbs, study, participant, tokenizer, now, text="zzz"):
    while True:
        _seq, _done, si = progress(dbs, study, participant)
        if si is None:
            return
        answer = StudyAnswerIn(study_item_id=si.id, text=text, skipped=False,
                               client_key=f"key-{participant.id:04d}-{si.id:04d}", reaction_ms=900)
        submit_answer(dbs, study, participant, tokenizer, answer, received_at=now)
        dbs.commit()


def test_balanced_assignment_fills_least_first_and_pilots_do_not_count(dbs):
    tokenizer = load_tokenizer(MODEL_SPEC)
    study = _create(dbs, items={"sample": 6}, seed=3, items_per_participant=2, target_responses=3, pilot=True)
    dbs.commit()
    now = datetime.now(UTC)
    # Pilots first: they answer, but the counts the assignment uses stay at zero.
    for _ in range(3):
        pilot = start_participant(dbs, study, {}, now=now)
        dbs.commit()
        assert pilot.pilot
        _finish(dbs, study, pilot, tokenizer, now)
    assert set(response_counts(dbs, study).values()) == {0}
    set_pilot(study, False)
    dbs.commit()
    # 6 items x 3 responses / 2 per participant = 9 participants fill every item exactly.
    for n in range(1, 10):
        p = start_participant(dbs, study, {"participant": f"p{n}"}, now=now)
        dbs.commit()
        assert not p.pilot and len(p.assigned) == 2 and len(set(p.assigned)) == 2
        _finish(dbs, study, p, tokenizer, now)
        counts = response_counts(dbs, study)
        assert max(counts.values()) - min(counts.values()) <= 1, counts  # least-filled first
        assert sum(counts.values()) == 2 * n
    assert set(response_counts(dbs, study).values()) == {3}
    summary = study_summary(dbs, study)
    assert summary["responses"]["items_at_target"] == 6 and summary["responses"]["needed"] == 0
    assert summary["participants"] == {"started": 9, "finished": 9, "in_progress": 0, "excluded": 0, "pilot": 3}


def test_participants_starting_together_get_different_items(dbs):
    study = _create(dbs, items={"sample": 6}, items_per_participant=2, target_responses=1)
    dbs.commit()
    now = datetime.now(UTC)
    a = start_participant(dbs, study, {}, now=now)
    b = start_participant(dbs, study, {}, now=now)
    c = start_participant(dbs, study, {}, now=now)
    dbs.commit()
    assert len(set(a.assigned) | set(b.assigned) | set(c.assigned)) == 6  # reservations spread them
    # A run abandoned longer ago than the reservation window no longer holds its items.
    a.started_at = now - timedelta(minutes=61)
    dbs.commit()
    counts = fill_counts(dbs, study, now=now, reservation_minutes=60)
    assert sorted(counts.values()) == [0, 0, 1, 1, 1, 1]
    assert all(counts[si] == 0 for si in a.assigned)


def test_assignment_is_reproducible_and_fixed_order_spreads_checks(dbs):
    study = _create(dbs, items={"sample": 6}, items_per_participant=4, order="fixed",
                    checks=["Please type the word red: | red", "Now type the word green: | green"])
    dbs.commit()
    p = start_participant(dbs, study, {}, now=datetime.now(UTC))
    dbs.commit()
    kinds = [dbs.get(StudyItem, i).kind for i in p.assigned]
    assert kinds.count("check") == 2 and kinds.count("test") == 4
    assert kinds[0] == "test" and kinds[-1] == "test"  # checks spread inside, not bunched at an end
    tests = [dbs.get(StudyItem, i) for i in p.assigned if dbs.get(StudyItem, i).kind == "test"]
    assert [si.order for si in tests] == sorted(si.order for si in tests)
    # The stored seed reproduces the tie-breaks: same counts + same participant -> same choice.
    saved, p.assigned = list(p.assigned), []
    assert assign_items(dbs, study, p, now=datetime.now(UTC),
                        reservation_minutes=60) == saved


# ---------------------------------------------------------------------------- participant journey


def test_url_params_are_captured_and_answers_stored_with_the_model_view(scored_app, client, dbs):
    study_id = make_study(scored_app, ask_probability=True)
    slug = study_row(scored_app, study_id).slug
    token = consent(client, slug, PROLIFIC_PID="pp1", STUDY_ID="st1", SESSION_ID="se1", utm_source="x")
    [p] = participants(scored_app, study_id)
    assert p.external_id == "pp1" and p.consented_at is not None
    assert p.url_params == {"PROLIFIC_PID": "pp1", "STUDY_ID": "st1", "SESSION_ID": "se1"}

    q = current(client, slug)["question"]
    assert q["index"] == 1 and q["total"] == 3 and q["mode"] == "token" and q["ask_probability"]
    si = dbs.get(StudyItem, q["study_item_id"])
    prediction = prediction_for(dbs, si.item_id, active_model(dbs, MODEL_SPEC).id)
    tokenizer = load_tokenizer(MODEL_SPEC)
    text = next(  # a token in the stored top-k that is typed as itself, but not the true token
        t for tid, _lp, _d, control in prediction.top_k[1:]
        if not control and tid != si.item.token_id
        and (t := tokenizer.token_bytes(tid).decode("utf-8", "ignore")).strip()
        and tokenizer.tokenize(t) == [tid]
    )
    missing = answer(client, slug, token, q["study_item_id"], text)
    assert missing.status_code == 400 and "likely" in missing.get_json()["error"]
    reply = answer(client, slug, token, q["study_item_id"], text, reported_probability=0.35)
    assert reply.status_code == 200, reply.get_json()
    body = reply.get_json()
    assert body["feedback"] is None and body["answered"] == 1 and "target" not in str(body["question"])

    guess = dbs.scalar(select(Guess).where(Guess.study_id == study_id))
    assert guess.source == "study" and guess.mode == "token" and guess.player_id == p.player_id
    assert guess.item_id == si.item_id and guess.reported_probability == 0.35
    assert guess.raw_text == text and guess.client_reaction_ms == 1234 and not guess.is_correct
    assert (guess.model_logprob, guess.model_rank) == model_view_of_token(prediction, guess.first_token_id)
    assert guess.model_logprob is not None and guess.model_rank >= 2  # in the stored top-k


def test_reload_resumes_and_a_finished_id_cannot_start_again(scored_app, dbs):
    study_id = make_study(scored_app, completion_code="DONE-42",
                          redirect_url="https://example.org/finish?cc={code}&p={participant}")
    slug = study_row(scored_app, study_id).slug
    first = scored_app.test_client()
    token = consent(first, slug, PROLIFIC_PID="same-person", SESSION_ID="s-1")
    q1 = current(first, slug)["question"]
    assert answer(first, slug, token, q1["study_item_id"]).status_code == 200
    # Reload (same browser): resumes at the second item; the answered one is refused.
    q2 = current(first, slug)["question"]
    assert q2["index"] == 2 and q2["study_item_id"] != q1["study_item_id"]
    again = answer(first, slug, token, q1["study_item_id"])
    assert again.status_code == 409 and "already answered" in again.get_json()["error"]
    assert first.get(f"/s/{slug}").headers["Location"].endswith(f"/s/{slug}/task")
    # Another browser with the same platform id does not take the run over (issue 12): it gets
    # the consent page; with the run's own SESSION_ID it resumes the same run.
    second = scored_app.test_client()
    stranger = second.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "same-person"})
    assert stranger.status_code == 200 and "consent" in stranger.get_data(as_text=True).lower()
    assert current(second, slug)["_status"] == 403
    resumed = second.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "same-person", "SESSION_ID": "s-1"})
    assert resumed.status_code == 302 and resumed.headers["Location"].endswith(f"/s/{slug}/task")
    assert current(second, slug)["question"]["study_item_id"] == q2["study_item_id"]
    assert len(participants(scored_app, study_id)) == 1

    last = run_through(first, slug, token)
    assert last["finished"] and last["done_url"].endswith(f"/s/{slug}/done")
    done = first.get(f"/s/{slug}/done").get_data(as_text=True)
    assert "DONE-42" in done and "https://example.org/finish?cc=DONE-42&amp;p=same-person" in done

    # The same attempt again (its SESSION_ID), in a fresh browser: a clear page with 409, and
    # the API refuses too.
    third = scored_app.test_client()
    page = third.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "same-person", "SESSION_ID": "s-1"})
    assert page.status_code == 409 and "already completed" in page.get_data(as_text=True)
    after = answer(first, slug, token, q2["study_item_id"])
    assert after.status_code == 409
    assert current(first, slug)["_status"] == 409
    assert len(participants(scored_app, study_id)) == 1
    assert dbs.scalar(select(func.count(Guess.id)).where(Guess.study_id == study_id)) == 3


def test_retried_answer_is_stored_once(scored_app, client, dbs):
    study_id = make_study(scored_app)
    slug = study_row(scored_app, study_id).slug
    token = consent(client, slug, participant="retry")
    q = current(client, slug)["question"]
    one = answer(client, slug, token, q["study_item_id"], client_key="retry-key-0001")
    two = answer(client, slug, token, q["study_item_id"], client_key="retry-key-0001")
    assert one.status_code == two.status_code == 200 and two.get_json()["replayed"] is True
    assert dbs.scalar(select(func.count(Guess.id)).where(Guess.study_id == study_id)) == 1


def test_without_consent_nothing_is_stored_and_the_api_refuses(scored_app, client, dbs):
    study_id = make_study(scored_app)
    slug = study_row(scored_app, study_id).slug
    assert client.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "x"}).status_code == 200
    assert client.get(f"/s/{slug}/declined").status_code == 200
    assert client.get(f"/api/s/{slug}/current").status_code == 403
    assert client.get(f"/s/{slug}/task").status_code == 302
    assert participants(scored_app, study_id) == []
    assert client.get("/s/no-such-study").status_code == 404


def test_closed_study_refuses_new_participants_but_lets_started_ones_finish(scored_app, dbs):
    study_id = make_study(scored_app)
    slug = study_row(scored_app, study_id).slug
    started = scored_app.test_client()
    token = consent(started, slug, participant="early")
    dbs.get(Study, study_id).status = "closed"
    dbs.commit()
    late = scored_app.test_client()
    assert late.get(f"/s/{slug}", query_string={"participant": "late"}).status_code == 403
    assert run_through(started, slug, token)["finished"]


def test_comprehension_threshold_flags_excluded_and_keeps_the_data(scored_app, dbs):
    study_id = make_study(scored_app, checks=["To show you are reading, type the word blue: | blue",
                                              "And now type the word seven: | seven"],
                          check_threshold=0.75)
    study = study_row(scored_app, study_id)
    checks = {si.id: si.expected_answer for si in study.items if si.kind == "check"}

    def careful(q):
        return checks.get(q["study_item_id"], "the").upper() + "."  # case and punctuation ignored

    def half(q):
        return "blue" if checks.get(q["study_item_id"]) == "blue" else "the"

    good, bad = scored_app.test_client(), scored_app.test_client()
    run_through(good, study.slug, consent(good, study.slug, participant="good"), careful)
    run_through(bad, study.slug, consent(bad, study.slug, participant="bad"), half)
    by_id = {p.external_id: p for p in participants(scored_app, study_id)}
    assert by_id["good"].checks_passed == 2 and not by_id["good"].excluded
    p = by_id["bad"]
    assert (p.checks_passed, p.checks_total, p.excluded) == (1, 2, True)
    assert p.exclusion_reason == "passed 1 of 2 comprehension checks; the study's threshold is 0.75 (2 of 2)"
    assert p.finished_at is not None
    kept = dbs.scalar(select(func.count(Guess.id)).where(Guess.player_id == p.player_id))
    assert kept == len(p.assigned) == 5  # 3 test items + 2 checks: nothing dropped
    check_guesses = dbs.scalars(select(Guess).where(Guess.player_id == p.player_id, Guess.match_rule == "check"))
    assert sorted(g.is_correct for g in check_guesses) == [False, True]
    # Excluded answers do not count towards the targets.
    counted = sum(response_counts(dbs, dbs.get(Study, study_id)).values())
    assert counted == 3
    summary = study_summary(dbs, dbs.get(Study, study_id))
    assert summary["participants"]["excluded"] == 1 and summary["checks"] == {"total": 4, "passed": 3, "threshold": 0.75}


def test_feedback_only_when_the_study_says_so(scored_app, dbs):
    quiet_id = make_study(scored_app, show_feedback=False)
    loud_id = make_study(scored_app, show_feedback=True)
    for study_id, shows in ((quiet_id, False), (loud_id, True)):
        study = study_row(scored_app, study_id)
        client = scored_app.test_client()
        token = consent(client, study.slug)
        q = current(client, study.slug)["question"]
        si = next(s for s in study.items if s.id == q["study_item_id"])
        reply = answer(client, study.slug, token, q["study_item_id"], si.item.token_text).get_json()
        if not shows:
            assert reply["feedback"] is None
            continue
        fb = reply["feedback"]
        assert fb["correct"] is True and fb["target"] == si.item.token_text and not fb["skipped"]
        assert fb["model_top"]["text"] and 0 < fb["model_top"]["prob"] <= 1
        wrong = answer(client, study.slug, token, reply["question"]["study_item_id"], " zebra").get_json()
        assert wrong["feedback"]["correct"] is False


def test_word_mode_answers_are_whole_words(scored_app, dbs):
    study_id = make_study(scored_app, mode="word", allow_skip=False)
    study = study_row(scored_app, study_id)
    client = scored_app.test_client()
    token = consent(client, study.slug)
    q = current(client, study.slug)["question"]
    assert q["mode"] == "word" and q["allow_skip"] is False
    si = dbs.get(StudyItem, q["study_item_id"])
    word = target_word(si.item.document, si.item)
    refused = answer(client, study.slug, token, q["study_item_id"], "", skipped=True)
    assert refused.status_code == 400
    assert answer(client, study.slug, token, q["study_item_id"], word.upper()).status_code == 200
    guess = dbs.scalar(select(Guess).where(Guess.study_id == study_id))
    assert guess.mode == "word" and guess.is_correct and guess.match_rule == "word"
    assert guess.raw_text == word.upper()
    prediction = prediction_for(dbs, si.item_id, guess.model_id)
    assert (guess.model_logprob, guess.model_rank) == model_view_of_token(prediction, guess.first_token_id)
    assert q["context"] == si.item.document.text[: si.item.char_start]


def test_summary_compares_people_and_model_on_the_same_items(scored_app, dbs):
    study_id = make_study(scored_app, items_per_participant=3)
    study = study_row(scored_app, study_id)
    truth = {si.id: si.item.token_text for si in study.items}
    client = scored_app.test_client()
    run_through(client, study.slug, consent(client, study.slug), lambda q: truth[q["study_item_id"]])
    s = study_summary(dbs, dbs.get(Study, study_id))
    assert s["accuracy"]["n"] == 3 and s["accuracy"]["human"] == 1.0
    model_hits = 0
    for g in dbs.scalars(select(Guess).where(Guess.study_id == study_id)):
        prediction = prediction_for(dbs, g.item_id, g.model_id)
        model_hits += prediction.top1_id == g.item.token_id
    assert math.isclose(s["accuracy"]["model"], model_hits / 3)
    assert s["median_reaction_ms"] == 1234 and s["median_minutes"] is not None
    assert Counter(p.finished_at is not None for p in participants(scored_app, study_id))[True] == 1
    assert dbs.scalar(select(func.count(Participant.id))) == 1


# --------------------------------------------------------------------- issue 11: the study



def _form_study(scored_app, client, **fields) -> int:
    """Create a study through the set-up form (as a logged-in researcher); returns its id."""
    from research_helpers import csrf_token, login, make_researcher

    make_researcher(scored_app)
    assert login(client).status_code == 302
    token = csrf_token(client.get("/research/studies/new").get_data(as_text=True))
    form = {"csrf_token": token, "name": "Form study", "corpus": "tests", "mode": "token",
            "items_choice": "all", "items_per_participant": "3", "target_responses": "2",
            "order": "random", "allow_skip": "on", **fields}
    reply = client.post("/research/studies/new", data=form)
    assert reply.status_code == 302, reply.get_data(as_text=True)[-2000:]
    return int(reply.headers["Location"].rstrip("/").split("/")[-1])


def test_consent_and_instructions_keep_their_paragraphs_whatever_line_endings(scored_app, client, dbs):
    consent_text = "First paragraph.\r\n\r\nSecond paragraph,\r\nstill the second.\r\n \r\n\r\nThird.  "
    study_id = _form_study(scored_app, client, consent_text=consent_text,
                           instructions="Read.\r\rThen type.\u2029Last.")
    study = dbs.get(Study, study_id)
    assert study.consent_text == "First paragraph.\n\nSecond paragraph,\nstill the second.\n\nThird."
    assert study.instructions == "Read.\n\nThen type.\n\nLast."
    participant = scored_app.test_client()
    page = participant.get(f"/s/{study.slug}").get_data(as_text=True)
    assert "<p>First paragraph.</p><p>Second paragraph,\nstill the second.</p><p>Third.</p>" in page
    # A study stored before the normalisation (raw "\r\n\r\n") is still shown in paragraphs.
    study.consent_text = "Old one.\r\n\r\nOld two."
    dbs.commit()
    page = participant.get(f"/s/{study.slug}").get_data(as_text=True)
    assert "<p>Old one.</p><p>Old two.</p>" in page
    consent(participant, study.slug)
    page = participant.get(f"/s/{study.slug}/instructions").get_data(as_text=True)
    assert "<p>Read.</p><p>Then type.</p><p>Last.</p>" in page
    detail = client.get(f"/research/studies/{study_id}").get_data(as_text=True)
    assert "<p>Old one.</p><p>Old two.</p>" in detail

def test_pilot_figures_are_shown_beside_the_live_ones(scored_app, client, dbs):
    from research_helpers import login, make_researcher

    study_id = make_study(scored_app, pilot=True, items_per_participant=3)
    study = study_row(scored_app, study_id)
    truth = {si.id: si.item.token_text for si in study.items}
    pilot_run = scored_app.test_client()
    run_through(pilot_run, study.slug, consent(pilot_run, study.slug), lambda q: truth[q["study_item_id"]])
    set_pilot(dbs.get(Study, study_id), False)
    dbs.commit()
    live_run = scored_app.test_client()
    run_through(live_run, study.slug, consent(live_run, study.slug), lambda q: "zzzz")
    s = study_summary(dbs, dbs.get(Study, study_id))
    assert s["participants"]["started"] == 1 and s["participants"]["pilot"] == 1
    assert s["accuracy"]["human"] == 0.0 and s["accuracy"]["n"] == 3
    pilot = s["pilot"]
    assert (pilot["started"], pilot["finished"], pilot["responses"]) == (1, 1, 3)
    assert pilot["accuracy"]["human"] == 1.0 and pilot["accuracy"]["model"] is not None
    assert pilot["median_reaction_ms"] == 1234 and pilot["median_minutes"] is not None
    make_researcher(scored_app)
    login(client)
    page = client.get(f"/research/studies/{study_id}").get_data(as_text=True)
    assert "Live and pilot" in page and 'data-k="pilot.accuracy.human" data-fmt="pct">100%' in page
    assert client.get(f"/api/research/studies/{study_id}/summary").get_json()["pilot"]["responses"] == 3
    assert "Pilot: 1 started, 1 finished, people correct 100%" in client.get("/research/").get_data(as_text=True)


def test_the_report_can_include_pilots(scored_app, client, dbs):
    from research_helpers import login, make_researcher

    study_id = make_study(scored_app, pilot=True, items_per_participant=3, target_responses=5)
    slug = study_row(scored_app, study_id).slug
    for n in range(4):
        run = scored_app.test_client()
        run_through(run, slug, consent(run, slug, participant=f"p{n}"), lambda q: " the")
    make_researcher(scored_app)
    login(client)
    page = client.get(f"/research/studies/{study_id}").get_data(as_text=True)
    assert 'name="include_pilot" value="1" id="report-include-pilot"' in page
    without = client.get(f"/research/studies/{study_id}/report")
    assert without.status_code == 409  # every answer is a pilot's: nothing left to analyse
    assert "The analysis needs more data" in without.get_data(as_text=True)
    report = client.get(f"/research/studies/{study_id}/report?include_pilot=1")
    assert report.status_code == 200, report.get_data(as_text=True)[-1500:]
    assert "includes 12 pilot answers" in report.get_data(as_text=True)
    assert client.get(f"/research/studies/{study_id}/report?include_pilot=yes").status_code == 400


def test_no_message_shows_an_empty_pair_of_parentheses(scored_app, client, dbs):
    from research_helpers import login, make_researcher

    from webapp.research.routes import _with_detail

    assert _with_detail("Refused", "") == "Refused" and _with_detail("Refused", None) == "Refused"
    assert _with_detail("Refused", " why ") == "Refused (why)"
    study_id = make_study(scored_app, pilot=True, completion_code="C-1",
                          redirect_url="https://example.org/?cc={code}")
    slug = study_row(scored_app, study_id).slug
    run = scored_app.test_client()
    token = consent(run, slug, participant="paren")
    no_token = run.post(f"/api/s/{slug}/answers", json={})
    assert no_token.status_code == 400 and "()" not in no_token.get_json()["error"]
    run_through(run, slug, token)
    make_researcher(scored_app)
    login(client)
    pages = [client.get(u) for u in ("/research/", f"/research/studies/{study_id}",
                                     "/research/corpora", "/research/studies/new")]
    pages += [run.get(f"/s/{slug}/done"), scored_app.test_client().get(f"/s/{slug}")]
    for page in pages:
        assert page.status_code == 200 and "()" not in page.get_data(as_text=True)
    with scored_app.app_context():
        from sqlalchemy import update

        dbs.execute(update(Study).where(Study.id == study_id).values(corpus_id=None))
        dbs.commit()
    eyebrow = client.get(f"/research/studies/{study_id}").get_data(as_text=True)
    assert "token mode</p>" in eyebrow and "mode · </p>" not in eyebrow
