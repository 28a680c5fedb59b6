"""A known platform id takes over nobody's study run, and locks nobody out (issue 12).

Before: opening the study link with someone's PROLIFIC_PID in another browser continued their
run (answering in their name), and finishing a run under their id turned the real person away
with "already completed"."""

from __future__ import annotations

from research_helpers import (
    answer,
    consent,
    current,
    make_study,
    participants,
    run_through,
    study_row,
)


def test_a_known_platform_id_does_not_take_over_a_run(scored_app):
    study_id = make_study(scored_app)
    slug = study_row(scored_app, study_id).slug
    victim = scored_app.test_client()
    token = consent(victim, slug, PROLIFIC_PID="victim-pid", SESSION_ID="victim-session")
    q = current(victim, slug)["question"]
    assert answer(victim, slug, token, q["study_item_id"]).status_code == 200

    attacker = scored_app.test_client()
    page = attacker.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "victim-pid"})
    assert page.status_code == 200  # the consent page, not the victim's task
    assert current(attacker, slug)["_status"] == 403
    assert attacker.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "victim-pid",
                                                    "SESSION_ID": "guessed"}).status_code == 200
    attacker_token = consent(attacker, slug, PROLIFIC_PID="victim-pid")
    run_through(attacker, slug, attacker_token)

    runs = sorted(participants(scored_app, study_id), key=lambda p: p.id)
    assert len(runs) == 2
    assert runs[0].duplicate_of is None and runs[1].duplicate_of == runs[0].id
    # The victim's run is untouched and goes on where it was.
    assert current(victim, slug)["answered"] == 1 and runs[0].finished_at is None
    last = run_through(victim, slug, token)
    assert last["finished"]


def test_a_run_nobody_consented_to_cannot_lock_the_real_person_out(scored_app):
    study_id = make_study(scored_app, completion_code="PAID-1")
    slug = study_row(scored_app, study_id).slug
    impostor = scored_app.test_client()
    run_through(impostor, slug, consent(impostor, slug, PROLIFIC_PID="real-pid"))

    real = scored_app.test_client()
    page = real.get(f"/s/{slug}", query_string={"PROLIFIC_PID": "real-pid", "SESSION_ID": "real-1"})
    assert page.status_code == 200 and "already completed" not in page.get_data(as_text=True)
    done = run_through(real, slug, consent(real, slug, PROLIFIC_PID="real-pid", SESSION_ID="real-1"))
    assert done["finished"]
    assert "PAID-1" in real.get(f"/s/{slug}/done").get_data(as_text=True)
    runs = sorted(participants(scored_app, study_id), key=lambda p: p.id)
    assert [r.duplicate_of for r in runs] == [None, runs[0].id]  # flagged for the researcher
    # Coming back with the same attempt is still "already completed".
    again = scored_app.test_client().get(f"/s/{slug}", query_string={"PROLIFIC_PID": "real-pid",
                                                                     "SESSION_ID": "real-1"})
    assert again.status_code == 409
