"""Helpers shared by the research tests: make studies and researchers, read CSRF tokens, and walk
a participant through a study over HTTP (the real app on the database scored by the real model)."""

from __future__ import annotations

import re
import uuid

from webapp.extensions import db
from webapp.game import active_model
from webapp.lm import load_tokenizer
from webapp.models import Participant, Study
from webapp.research.auth import create_researcher
from webapp.research.setup import create_study

MODEL_SPEC = "llamacpp:gemma-3-270m"
PASSWORD = "correct horse battery"

BASE_SPEC = {
    "name": "Cloze test",
    "corpus": "tests",
    "consent_text": "You agree to take part.",
    "items_per_participant": 3,
    "target_responses": 2,
    "pilot": False,
}

_CSRF = re.compile(r'name="csrf[-_]token" (?:value|content)="([^"]+)"')


def make_study(app, owner: str | None = None, **overrides) -> int:
    """Create a study (through webapp.research.setup, as the CLI does); returns its id. With
    `owner` (an e-mail) it belongs to that researcher; without, every researcher sees it."""
    with app.app_context():
        session = db.new_session()
        try:
            model = active_model(session, MODEL_SPEC)
            owner_id = None
            if owner is not None:
                from sqlalchemy import select

                from webapp.models import Researcher

                owner_id = session.scalar(select(Researcher.id).where(Researcher.email == owner))
            study = create_study(session, {**BASE_SPEC, **overrides}, model=model,
                                 tokenizer=load_tokenizer(MODEL_SPEC), created_by=owner_id)
            session.commit()
            return study.id
        finally:
            session.close()


def make_researcher(app, email: str = "ada@example.org", password: str = PASSWORD) -> None:
    with app.app_context():
        session = db.new_session()
        try:
            create_researcher(session, email, password)
            session.commit()
        finally:
            session.close()


def study_row(app, study_id: int) -> Study:
    with app.app_context():
        session = db.new_session()
        try:
            study = session.get(Study, study_id)
            _ = [si.item.document.text for si in study.items]  # load what tests read
            return study
        finally:
            session.close()


def participants(app, study_id: int) -> list[Participant]:
    from sqlalchemy import select

    with app.app_context():
        session = db.new_session()
        try:
            return list(session.scalars(
                select(Participant).where(Participant.study_id == study_id).order_by(Participant.id)
            ))
        finally:
            session.close()


def csrf_token(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(client, email: str = "ada@example.org", password: str = PASSWORD):
    page = client.get("/research/login")
    token = csrf_token(page.get_data(as_text=True))
    return client.post("/research/login", data={"email": email, "password": password, "csrf_token": token})


def consent(client, slug: str, **params) -> str:
    """Open the study link with URL params and agree; returns the task page's CSRF token."""
    page = client.get(f"/s/{slug}", query_string=params)
    assert page.status_code == 200, page.get_data(as_text=True)
    html = page.get_data(as_text=True)
    form = {"csrf_token": csrf_token(html)}
    form.update(dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html)))
    form["csrf_token"] = csrf_token(html)
    reply = client.post(f"/s/{slug}/consent", data=form)
    assert reply.status_code == 302, reply.get_data(as_text=True)
    assert reply.headers["Location"].endswith(f"/s/{slug}/instructions")
    task = client.get(f"/s/{slug}/task")
    assert task.status_code == 200
    return csrf_token(task.get_data(as_text=True))


def current(client, slug: str) -> dict:
    reply = client.get(f"/api/s/{slug}/current")
    return reply.get_json() | {"_status": reply.status_code}


def answer(client, slug: str, token: str, study_item_id: int, text: str = "the", *, skipped=False,
           client_key: str | None = None, **extra):
    body = {"study_item_id": study_item_id, "client_key": client_key or uuid.uuid4().hex,
            "text": text, "skipped": skipped, "reaction_ms": 1234, **extra}
    return client.post(f"/api/s/{slug}/answers", json=body, headers={"X-CSRFToken": token})


def run_through(client, slug: str, token: str, answers=None, **extra) -> dict:
    """Answer every item (with `answers(question) -> text`, default "the"); returns the last reply."""
    reply = None
    while True:
        state = current(client, slug)
        if state["_status"] == 409 or state.get("finished"):
            return reply or state
        q = state["question"]
        text = answers(q) if answers else "the"
        response = answer(client, slug, token, q["study_item_id"], text, **extra)
        assert response.status_code == 200, response.get_json()
        reply = response.get_json()
        if reply["finished"]:
            return reply
