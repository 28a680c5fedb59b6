"""One answer per player and position, enforced by the database, under concurrent submits.

Real threads send real requests at the same moment (a barrier releases them together), on
SQLite and on PostgreSQL: ten different answers for one position store one row; fifty retries
with one client key all get the same stored answer back.
"""

from __future__ import annotations

import threading
import uuid

from research_helpers import consent, current, make_study, study_row
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import Guess


def _together(n: int, send):
    """Run send(i) in n threads released at the same moment; returns the n results."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = send(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def _clients_of(app, first):
    """A factory of test clients sharing `first`'s session cookie (the same player)."""
    cookie = first.get_cookie("session")

    def make():
        c = app.test_client()
        c.set_cookie("session", cookie.value)
        return c

    return make


def _rows(app, **where) -> int:
    with app.app_context():
        query = select(func.count(Guess.id))
        for column, value in where.items():
            query = query.where(getattr(Guess, column) == value)
        return db.session.scalar(query)


def _solo_position(app):
    first = app.test_client()
    question = first.post("/api/play/next", json={}).get_json()["question"]
    return first, question["item_id"]


def test_solo_ten_different_answers_at_once_store_one(any_db_app):
    first, item_id = _solo_position(any_db_app)
    make = _clients_of(any_db_app, first)
    clients = [make() for _ in range(10)]
    replies = _together(10, lambda i: clients[i].post("/api/play/guesses", json={
        "item_id": item_id, "client_key": uuid.uuid4().hex, "text": f" word{i}"}))
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] + [409] * 9, [r.get_json() for r in replies]
    assert _rows(any_db_app, item_id=item_id) == 1
    refused = [r.get_json()["error"] for r in replies if r.status_code == 409]
    assert all("already answered" in e or "not your current position" in e for e in refused), refused


def test_solo_fifty_retries_of_one_answer_all_get_it_back(any_db_app):
    first, item_id = _solo_position(any_db_app)
    make = _clients_of(any_db_app, first)
    clients = [make() for _ in range(50)]
    key = uuid.uuid4().hex
    replies = _together(50, lambda i: clients[i].post("/api/play/guesses", json={
        "item_id": item_id, "client_key": key, "text": " the"}))
    assert [r.status_code for r in replies] == [200] * 50, {r.get_data(as_text=True) for r in replies}
    bodies = [r.get_json() for r in replies]
    assert sum(not b["replayed"] for b in bodies) == 1
    assert {b["guess"]["text"] for b in bodies} == {" the"}
    assert {b["target"]["id"] for b in bodies} == {bodies[0]["target"]["id"]}
    assert _rows(any_db_app, client_key=key) == 1


def test_study_concurrent_answers_store_one_and_progress_reads_right(any_db_app):
    study_id = make_study(any_db_app)
    slug = study_row(any_db_app, study_id).slug
    first = any_db_app.test_client()
    token = consent(first, slug, PROLIFIC_PID="racer")
    question = current(first, slug)["question"]
    make = _clients_of(any_db_app, first)
    clients = [make() for _ in range(10)]
    replies = _together(10, lambda i: clients[i].post(
        f"/api/s/{slug}/answers", headers={"X-CSRFToken": token},
        json={"study_item_id": question["study_item_id"], "client_key": uuid.uuid4().hex,
              "text": f" word{i}", "reaction_ms": 100}))
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] + [409] * 9, [r.get_json() for r in replies]
    assert _rows(any_db_app, study_id=study_id) == 1
    assert current(first, slug)["answered"] == 1
    key = uuid.uuid4().hex
    nxt = current(first, slug)["question"]
    clients = [make() for _ in range(20)]
    replies = _together(20, lambda i: clients[i].post(
        f"/api/s/{slug}/answers", headers={"X-CSRFToken": token},
        json={"study_item_id": nxt["study_item_id"], "client_key": key, "text": " the"}))
    assert [r.status_code for r in replies] == [200] * 20
    assert sum(not r.get_json()["replayed"] for r in replies) == 1
    assert _rows(any_db_app, study_id=study_id) == 2
    assert current(first, slug)["answered"] == 2
