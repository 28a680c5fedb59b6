"""Passages uploaded from the research dashboard (/research/corpora): the same import as
`humanlm corpus import` (all or nothing; errors name the file and line), then scored by the
background jobs with the real model while the page shows the progress."""

from __future__ import annotations

import html
import io
import time

import pytest
from research_helpers import csrf_token, login, make_researcher
from sqlalchemy import func, select

from webapp import jobs
from webapp.extensions import db
from webapp.models import Corpus, Document, Item, Prediction

pytestmark = pytest.mark.model

PASSAGES = (
    "The river was wide and slow. Children played on its banks all summer long.\n\n"
    "In the morning the baker opened his shop and the smell of bread filled the street.\n"
)


def _page(client):
    return client.get("/research/corpora").get_data(as_text=True)


def _upload(client, name: str, data: bytes, **form):
    token = csrf_token(_page(client))
    fields = {"csrf_token": token, "corpus": "uploaded", "text_field": "text", "split": "file",
              **form, "file": (io.BytesIO(data), name)}
    return client.post("/research/corpora", data=fields, content_type="multipart/form-data")


def _count(app, model, *where):
    with app.app_context():
        session = db.new_session()
        try:
            return session.scalar(select(func.count()).select_from(model).where(*where))
        finally:
            session.close()


@pytest.fixture
def researcher(scored_app, client):
    make_researcher(scored_app)
    assert login(client).status_code == 302
    return client


def test_a_bad_file_is_refused_with_every_bad_line_and_nothing_is_stored(scored_app, researcher):
    lines = [
        '{"text": "A fine first passage about the sea."}',
        '{"text": "broken',
        '{"title": "no text here"}',
        '{"text": "Another good passage."}',
        '["not", "an", "object"]',
    ]
    reply = _upload(researcher, "my passages.jsonl", "\n".join(lines).encode())
    assert reply.status_code == 400
    page = html.unescape(reply.get_data(as_text=True))
    assert "Nothing was imported" in page
    for number in (2, 3, 5):
        assert f"my passages.jsonl:{number}:" in page, page[-3000:]
    assert "my passages.jsonl:1:" not in page and "my passages.jsonl:4:" not in page
    assert "humanlm-upload" not in page and "/tmp" not in page  # no server paths shown
    assert _count(scored_app, Corpus, Corpus.name == "uploaded") == 0


@pytest.mark.parametrize(("name", "data", "form", "needle"), [
    ("notes.pdf", b"%PDF-1.4", {}, "unsupported file type"),
    ("latin1.txt", "caf\xe9 au lait\n".encode("latin-1"), {}, "not valid UTF-8 (line 1"),
    ("empty.txt", b"   \n", {}, "file is empty"),
    ("rows.csv", b"title,body\nA,Some text\n", {}, "no column 'text'"),
    ("ok.txt", b"Some text.", {"corpus": ""}, "give the corpus a name"),
    ("ok.txt", b"Some text.", {"corpus": "study-checks"}, "hidden corpus"),
    ("ok.txt", b"Some text.", {"min_prefix_tokens": "lots"}, "Skip the first N positions"),
])
def test_refusals_say_what_to_fix(scored_app, researcher, name, data, form, needle):
    if form.get("corpus") == "study-checks":
        with scored_app.app_context():
            session = db.new_session()
            session.add(Corpus(name="study-checks", purpose="study_checks"))
            session.commit()
            session.close()
    reply = _upload(researcher, name, data, **form)
    assert reply.status_code == 400
    assert needle in html.unescape(reply.get_data(as_text=True))
    assert _count(scored_app, Corpus, Corpus.name == "uploaded") == 0


def test_an_upload_over_the_limit_is_refused_on_the_page(scored_app, researcher):
    scored_app.config["MAX_IMPORT_BYTES"] = 1000
    small_over = _upload(researcher, "big.txt", b"word " * 300)  # 1,500 bytes: read, then refused
    assert small_over.status_code == 400
    assert "over the limit of 1,000 bytes" in small_over.get_data(as_text=True)
    huge = _upload(researcher, "huge.txt", b"word " * 40_000)  # past the request limit itself
    assert huge.status_code == 413
    assert "larger than 1,000 bytes" in huge.get_data(as_text=True)
    assert _count(scored_app, Corpus, Corpus.name == "uploaded") == 0


def test_csrf_is_required(researcher):
    reply = researcher.post("/research/corpora", data={"corpus": "x", "file": (io.BytesIO(b"Text."), "a.txt")},
                            content_type="multipart/form-data")
    assert reply.status_code == 400 and "This form has expired" in reply.get_data(as_text=True)


def test_an_upload_is_imported_then_scored_by_the_jobs_with_progress(scored_app, researcher):
    reply = _upload(researcher, "shop.txt", PASSAGES.encode(), split="blank-line")
    assert reply.status_code == 302, reply.get_data(as_text=True)
    page = researcher.get(reply.headers["Location"]).get_data(as_text=True)
    assert "2 passages added to the new corpus “uploaded”" in page
    with scored_app.app_context():
        session = db.new_session()
        corpus = session.scalar(select(Corpus).where(Corpus.name == "uploaded"))
        corpus_id = corpus.id
        session.close()
    assert f'data-progress-url="/api/research/corpora/progress?corpus={corpus_id}"' in page

    progress = researcher.get(f"/api/research/corpora/progress?corpus={corpus_id}").get_json()
    assert progress["state"] == "queued" and progress["active"]
    assert (progress["documents"], progress["scored_documents"]) == (2, 0)
    # The request did not score anything: no prediction exists yet.
    assert _count(scored_app, Prediction, Prediction.item_id.in_(
        select(Item.id).join(Document).where(Document.corpus_id == corpus_id))) == 0

    consumer = jobs.start_in_thread(scored_app)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            progress = researcher.get(f"/api/research/corpora/progress?corpus={corpus_id}").get_json()
            if not progress["active"]:
                break
            time.sleep(0.5)
    finally:
        consumer.stop()
    assert progress["state"] == "scored", progress
    assert progress["scored_documents"] == 2 and progress["fraction"] == 1.0
    n_items = _count(scored_app, Item, Item.document_id.in_(
        select(Document.id).where(Document.corpus_id == corpus_id)))
    assert _count(scored_app, Prediction, Prediction.item_id.in_(
        select(Item.id).join(Document).where(Document.corpus_id == corpus_id))) == n_items > 0
    # A study can use it now: the set-up form offers it with its scored passages.
    assert "uploaded (2 scored passages)" in researcher.get("/research/studies/new").get_data(as_text=True)

    # The same file again: nothing new, nothing queued.
    again = _upload(researcher, "shop.txt", PASSAGES.encode(), split="blank-line")
    page = researcher.get(again.headers["Location"]).get_data(as_text=True)
    assert "0 passages added to corpus “uploaded”" in page and "2 already imported, skipped" in page


@pytest.mark.parametrize("name, data, form", [
    ("passages.csv", b'id,text\n1,"The river was wide, and slow."\n2,The baker opened his shop.\n',
     {"text_field": "text"}),
    ("passages.jsonl", b'{"text": "The river was wide and slow."}\n{"text": "The baker opened his shop."}\n',
     {}),
])
def test_csv_and_jsonl_uploads_are_imported_and_queued(scored_app, researcher, name, data, form):
    """Every format the page offers (.txt is above): two passages added, queued for scoring."""
    reply = _upload(researcher, name, data, corpus="tabular", **form)
    assert reply.status_code == 302, reply.get_data(as_text=True)[-2000:]
    page = researcher.get(reply.headers["Location"]).get_data(as_text=True)
    assert "2 passages added to the new corpus \u201ctabular\u201d" in page, page[-3000:]
    texts = set()
    with scored_app.app_context():
        session = db.new_session()
        try:
            corpus = session.scalar(select(Corpus).where(Corpus.name == "tabular"))
            texts = {d.text for d in session.scalars(select(Document).where(Document.corpus_id == corpus.id))}
        finally:
            session.close()
    assert {t.strip() for t in texts} == {
        "The river was wide, and slow." if name.endswith(".csv") else "The river was wide and slow.",
        "The baker opened his shop."}
    progress = researcher.get(f"/api/research/corpora/progress?corpus={corpus.id}").get_json()
    assert progress["state"] == "queued" and progress["documents"] == 2


def test_progress_of_an_unknown_or_hidden_corpus_is_404(researcher):
    assert researcher.get("/api/research/corpora/progress?corpus=999").status_code == 404
    assert researcher.get("/api/research/corpora/progress?corpus=x").status_code == 404
