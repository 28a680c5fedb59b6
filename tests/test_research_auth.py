"""Researcher login, route by route: every research page and data endpoint refuses a logged-out
request (a redirect to the login page for pages, 401 JSON for the API and the export) and works
after login; wrong passwords, expiry, logout, CSRF on every form, and no harm to the game's API."""

from __future__ import annotations

import io
import time
import zipfile

import pytest
from research_helpers import PASSWORD, csrf_token, login, make_researcher, make_study, study_row

from webapp.extensions import db
from webapp.models import Researcher, Study

pytestmark = pytest.mark.model

# Every researcher-only endpoint of the research blueprint: (method, URL template, kind).
# {id} is a study id. A test below fails if the blueprint gains a route missing from here.
PROTECTED = [
    ("GET", "/research/", "page"),
    ("GET", "/research/studies/new", "page"),
    ("POST", "/research/studies/new", "page"),
    ("GET", "/research/studies/{id}", "page"),
    ("POST", "/research/studies/{id}/settings", "page"),
    ("GET", "/api/research/studies/{id}/summary", "json"),
    ("GET", "/research/studies/{id}/export?format=csv", "json"),
    ("GET", "/research/studies/{id}/export?format=jsonl&include_pilot=1", "json"),
    ("GET", "/research/studies/{id}/export?format=parquet", "json"),
    ("GET", "/research/studies/{id}/report", "report"),
    ("GET", "/research/studies/{id}/report?include_pilot=1", "report"),
    ("GET", "/research/corpora", "page"),
    ("POST", "/research/corpora", "page"),
    ("GET", "/api/research/corpora/progress?corpus=1", "json"),
]
# Open on purpose: the login page, logout, and the participant's side of a study.
PUBLIC_ENDPOINTS = {
    "research.login", "research.logout", "research.study_entry", "research.study_consent",
    "research.study_declined", "research.study_instructions", "research.study_task",
    "research.study_done", "research.study_current", "research.study_answer",
}


@pytest.fixture
def study_id(scored_app):
    make_researcher(scored_app)
    return make_study(scored_app, pilot=True)


def _request(client, method, url, token=None):
    if method == "GET":
        return client.get(url)
    data = {"csrf_token": token} if token else {}
    if url.endswith("/settings"):
        data["action"] = "close"
    return client.post(url, data=data)


def test_every_research_route_is_in_the_table(scored_app):
    rules = {
        (method, rule.rule)
        for rule in scored_app.url_map.iter_rules() if rule.endpoint.startswith("research.")
        and rule.endpoint not in PUBLIC_ENDPOINTS
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    listed = {(m, u.split("?")[0].replace("{id}", "<int:study_id>")) for m, u, _ in PROTECTED}
    assert rules == listed


@pytest.mark.parametrize(("method", "url", "kind"), PROTECTED)
def test_logged_out_is_refused(scored_app, client, study_id, method, url, kind):
    token = csrf_token(client.get("/research/login").get_data(as_text=True))
    response = _request(client, method, url.format(id=study_id), token)
    if kind == "json":
        assert response.status_code == 401
        assert response.get_json() == {"error": "log in as a researcher first"}
    else:
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/research/login?next=")
    assert study_row(scored_app, study_id).status == "open"  # nothing changed


@pytest.mark.parametrize(("method", "url", "kind"), PROTECTED)
def test_another_researchers_study_is_not_found(scored_app, client, method, url, kind):
    """Every study route, as a second researcher, on a study the first one owns: a 404 (pages
    and JSON alike, so its existence is not revealed) and nothing changed; once shared, served."""
    make_researcher(scored_app)
    make_researcher(scored_app, email="bo@example.org")
    owned = make_study(scored_app, owner="ada@example.org", pilot=True)
    assert login(client, "bo@example.org").status_code == 302
    token = csrf_token(client.get("/research/").get_data(as_text=True))
    response = _request(client, method, url.format(id=owned), token)
    if "{id}" in url:
        assert response.status_code == 404, response.get_data(as_text=True)[:200]
        if kind == "json" or url.startswith("/api/"):
            assert "there is no study" in response.get_json()["error"]
    else:
        assert response.status_code in (200, 400)
        assert f"/research/studies/{owned}" not in response.get_data(as_text=True)
    assert study_row(scored_app, owned).status == "open"  # nothing changed
    with scored_app.app_context():
        from webapp.research.auth import share_study

        share_study(db.session, db.session.get(Study, owned), "bo@example.org")
        db.session.commit()
    shared = _request(client, method, url.format(id=owned), token)
    assert shared.status_code != 404


@pytest.mark.parametrize(("method", "url", "kind"), PROTECTED)
def test_logged_in_is_served(scored_app, client, study_id, method, url, kind):
    assert login(client).status_code == 302
    token = csrf_token(client.get("/research/").get_data(as_text=True))
    response = _request(client, method, url.format(id=study_id), token)
    if method == "POST" and url.endswith("/new"):
        assert response.status_code == 400  # an empty form: served, with errors to fix
        assert "The study was not created" in response.get_data(as_text=True)
    elif method == "POST" and url.endswith("/corpora"):
        assert response.status_code == 400  # no file: served, saying what to do
        assert "Choose a .txt, .jsonl or .csv file" in response.get_data(as_text=True)
    elif "/corpora/progress" in url:
        assert response.status_code == 200
        assert response.get_json()["name"] == "tests" and response.get_json()["documents"] == 2
    elif method == "POST":
        assert response.status_code == 302 and study_row(scored_app, study_id).status == "closed"
    elif "export" in url:
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        assert response.mimetype == "application/zip"
        assert "attachment" in response.headers["Content-Disposition"]
        names = zipfile.ZipFile(io.BytesIO(response.get_data())).namelist()
        assert any("guesses" in n for n in names) and any("codebook" in n for n in names)
    elif kind == "report":  # a study without answers: served, saying what is missing
        assert response.status_code == 409
        assert "The analysis needs more data" in response.get_data(as_text=True)
    elif kind == "json":
        assert response.status_code == 200 and "participants" in response.get_json()
    else:
        assert response.status_code == 200
        assert "ada@example.org" in response.get_data(as_text=True)


def test_export_rejects_bad_options_as_json(client, study_id):
    login(client)
    bad_format = client.get(f"/research/studies/{study_id}/export?format=xlsx")
    assert bad_format.status_code == 400 and "format" in bad_format.get_json()["error"]
    bad_pilot = client.get(f"/research/studies/{study_id}/export?include_pilot=yes")
    assert bad_pilot.status_code == 400 and "include_pilot" in bad_pilot.get_json()["error"]
    missing = client.get("/research/studies/999/export")
    assert missing.status_code == 404 and missing.get_json()["error"] == "there is no study 999"
    assert client.get("/research/studies/999").status_code == 404
    assert client.get("/api/research/studies/999/summary").status_code == 404


def test_wrong_password_and_unknown_email_are_refused_alike(client, study_id, scored_app):
    wrong = login(client, password="not the password")
    unknown = login(client, email="nobody@example.org")
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert "Wrong e-mail or password." in response.get_data(as_text=True)
    assert client.get("/research/").status_code == 302
    with scored_app.app_context():
        session = db.new_session()
        assert session.query(Researcher).one().last_login_at is None
        session.close()
    assert login(client, email=" ADA@example.org ").status_code == 302  # e-mail case and spaces
    assert client.get("/research/").status_code == 200


def test_login_follows_only_local_next(client, study_id):
    page = client.get("/research/studies/new")
    assert page.headers["Location"] == "/research/login?next=/research/studies/new"
    token = csrf_token(client.get("/research/login").get_data(as_text=True))
    reply = client.post("/research/login", data={"email": "ada@example.org", "password": PASSWORD,
                                                 "csrf_token": token, "next": "/research/studies/new"})
    assert reply.headers["Location"] == "/research/studies/new"
    client.post("/research/logout", data={"csrf_token": csrf_token(client.get("/research/").get_data(as_text=True))})
    token = csrf_token(client.get("/research/login").get_data(as_text=True))
    evil = client.post("/research/login", data={"email": "ada@example.org", "password": PASSWORD,
                                                "csrf_token": token, "next": "https://evil.example/x"})
    assert evil.headers["Location"] == "/research/"


def _login_started(app, when: float) -> None:
    """Move the newest server-side login back in time (the expiry counts from its start)."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from webapp.models import ResearcherSession

    with app.app_context():
        stored = db.session.scalar(select(ResearcherSession).order_by(ResearcherSession.id.desc()))
        stored.created_at = datetime.fromtimestamp(when, UTC)
        db.session.commit()


def test_session_expires(scored_app, client, study_id):
    login(client)
    assert client.get("/research/").status_code == 200
    minutes = scored_app.config["RESEARCH_SESSION_MINUTES"]
    _login_started(scored_app, time.time() - minutes * 60 - 1)
    page = client.get("/research/")
    assert page.status_code == 302 and "expired=1" in page.headers["Location"]
    assert "Your session expired" in client.get(page.headers["Location"]).get_data(as_text=True)
    api = client.get(f"/api/research/studies/{study_id}/summary")
    assert api.status_code == 401  # the expired login was dropped from the session
    login(client)
    _login_started(scored_app, time.time() - minutes * 60 + 30)  # 30 s left: still valid
    assert client.get("/research/").status_code == 200


def test_logout_ends_the_session(client, study_id):
    login(client)
    token = csrf_token(client.get("/research/").get_data(as_text=True))
    assert client.post("/research/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/research/").status_code == 302
    assert client.get(f"/api/research/studies/{study_id}/summary").status_code == 401


def test_forms_and_the_participant_api_need_the_csrf_token(scored_app, client, study_id):
    no_token = client.post("/research/login", data={"email": "ada@example.org", "password": PASSWORD})
    assert no_token.status_code == 400 and "expired or was not sent from this site" in no_token.get_data(as_text=True)
    assert client.get("/research/").status_code == 302  # not logged in
    login(client)
    refused = client.post(f"/research/studies/{study_id}/settings", data={"action": "close"})
    assert refused.status_code == 400 and study_row(scored_app, study_id).status == "open"
    forged = client.post(f"/research/studies/{study_id}/settings", data={"action": "close", "csrf_token": "x" * 40})
    assert forged.status_code == 400 and study_row(scored_app, study_id).status == "open"
    new = client.post("/research/studies/new", data={"name": "x", "corpus": "tests", "consent_text": "ok"})
    assert new.status_code == 400
    with scored_app.app_context():
        session = db.new_session()
        assert session.query(Study).count() == 1
        session.close()
    slug = study_row(scored_app, study_id).slug
    participant = scored_app.test_client()
    participant.get(f"/s/{slug}")
    assert participant.post(f"/s/{slug}/consent", data={}).status_code == 400
    api = participant.post(f"/api/s/{slug}/answers", json={"study_item_id": 1, "client_key": "k" * 10})
    assert api.status_code == 400 and "CSRF" in api.get_json()["error"]


def test_the_game_api_still_needs_no_csrf_token(client):
    assert client.post("/api/play/next", json={}).status_code == 200


def test_study_created_from_the_form(scored_app, client, study_id):
    login(client)
    token = csrf_token(client.get("/research/studies/new").get_data(as_text=True))
    form = {
        "csrf_token": token, "name": "From the form", "slug": "from-the-form", "corpus": "tests",
        "mode": "word", "items_choice": "sample", "sample_size": "6", "items_per_participant": "3",
        "target_responses": "4", "order": "fixed", "seed": "11", "consent_text": "Agree?",
        "instructions": "", "show_feedback": "on", "checks": "Type the word blue: | blue",
        "check_threshold": "1", "completion_code": "ABC", "redirect_url": "https://example.org/?cc={code}",
    }
    reply = client.post("/research/studies/new", data=form)
    assert reply.status_code == 302, reply.get_data(as_text=True)
    with scored_app.app_context():
        session = db.new_session()
        study = session.query(Study).filter_by(slug="from-the-form").one()
        assert (study.mode, study.order, study.seed, study.target_responses) == ("word", "fixed", 11, 4)
        assert study.show_feedback and not study.ask_probability and not study.pilot
        assert sum(si.kind == "test" for si in study.items) == 6 and study.created_by is not None
        assert study.settings["allow_skip"] is False and study.instructions.startswith("You will see")
        session.close()
    page = client.get(reply.headers["Location"]).get_data(as_text=True)
    assert "/s/from-the-form" in page and "created" in page
    # Errors name the fields and keep what was typed.
    bad = client.post("/research/studies/new", data={**form, "slug": "from-the-form", "check_threshold": "2"})
    html = bad.get_data(as_text=True)
    assert bad.status_code == 400 and "already exists" in html and "between 0 and 1" in html
    assert 'value="From the form"' in html
