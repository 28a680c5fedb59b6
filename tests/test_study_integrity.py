"""Study answers are served nowhere else before a participant answers them.

The attack (it recovered 3 of 3 study answers in 510 requests before): a stranger opens the
public solo game and skips through every passage; each reveal shows a true token and every
later prefix shows the tokens before it. Rooms show prefixes too. While a study is open, its
passages are kept out of public play entirely."""

from __future__ import annotations

import uuid

from research_helpers import make_study, study_row
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Item, StudyItem


def _one_passage_study(app) -> int:
    """A study on three positions of the first passage (the others stay public)."""
    from webapp.models import Document, Prediction

    with app.app_context():
        doc_id = db.session.scalar(select(Document.id).order_by(Document.id))
        items = db.session.scalars(
            select(Item.id).where(Item.document_id == doc_id, Item.playable,
                                  Item.id.in_(select(Prediction.item_id)))
            .order_by(Item.position)
        ).all()[:3]
    return make_study(app, items=list(items), items_per_participant=3)


def _study_items(app, study_id) -> dict[int, tuple[int, int]]:
    """item id -> (document id, position) of the study's items."""
    with app.app_context():
        rows = db.session.execute(
            select(Item.id, Item.document_id, Item.position)
            .join(StudyItem, StudyItem.item_id == Item.id).where(StudyItem.study_id == study_id)
        ).all()
    return {item_id: (doc, pos) for item_id, doc, pos in rows}


def _skip_through_everything(client, budget: int = 600) -> tuple[set[int], list[tuple[int, int]]]:
    """Play the public game by skipping: (revealed item ids, (document, prefix length) seen)."""
    revealed, prefixes = set(), []
    for _ in range(budget):
        reply = client.post("/api/play/next", json={"new_passage": False}).get_json()
        question = reply.get("question")
        if question is None:
            break
        prefixes.append((question["document"]["id"], question["position"]))
        answer = client.post("/api/play/guesses", json={
            "item_id": question["item_id"], "client_key": uuid.uuid4().hex, "skipped": True})
        assert answer.status_code == 200, answer.get_json()
        revealed.add(question["item_id"])
    return revealed, prefixes


def test_the_solo_game_reveals_no_study_answer(scored_app, client):
    study_id = _one_passage_study(scored_app)
    targets = _study_items(scored_app, study_id)
    revealed, prefixes = _skip_through_everything(client)
    assert revealed, "the public game still plays the passages no study uses"
    assert not revealed & set(targets)
    for doc, position in prefixes:  # no prefix reaches past a study item of its passage
        assert not any(doc == d and position > p for d, p in targets.values()), (doc, position)
    # Answering a study passage's position directly is refused too.
    item_id = next(iter(targets))
    reply = client.post("/api/play/guesses", json={"item_id": item_id, "client_key": uuid.uuid4().hex,
                                                   "skipped": True})
    assert reply.status_code == 409 and "in use by a study" in reply.get_json()["error"]


def test_rooms_never_ask_a_study_passage(scored_app, client):
    study_id = _one_passage_study(scored_app)
    docs = {d for d, _ in _study_items(scored_app, study_id).values()}
    for _ in range(15):
        room = client.post("/api/rooms", json={"source": "corpus", "corpus": "tests", "rounds": 1})
        if room.status_code != 201:
            assert "playable positions" in room.get_json()["error"]
            continue
        with scored_app.app_context():
            from webapp.models import Room

            asked = db.session.scalar(select(Room).where(Room.code == room.get_json()["code"])).rounds
            assert all(r.item.document_id not in docs for r in asked)


def test_a_closed_study_gives_its_passages_back(scored_app, client):
    study_id = _one_passage_study(scored_app)
    with scored_app.app_context():
        study = study_row(scored_app, study_id)
        from webapp.models import Study

        db.session.get(Study, study.id).status = "closed"
        db.session.commit()
    revealed, _ = _skip_through_everything(client)
    assert set(_study_items(scored_app, study_id)) <= revealed
