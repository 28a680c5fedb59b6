"""Rounds of the solo game, the daily passage, its board, streaks and difficulty (issue 11)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Document, Guess, Item, Player, Prediction
from webapp.play import rounds

pytestmark = pytest.mark.model


def key() -> str:
    return uuid.uuid4().hex


def next_q(client, **body) -> dict:
    response = client.post("/api/play/next", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def answer(client, item_id, text=" the", skipped=False) -> dict:
    body = {"item_id": item_id, "client_key": key(), "text": "" if skipped else text, "skipped": skipped}
    response = client.post("/api/play/guesses", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture
def dbs(scored_app):
    with scored_app.app_context():
        session = db.new_session()
        yield session
        session.close()


def test_a_round_is_ten_positions_and_ends_on_a_result_card(client, dbs):
    texts = [" the", None, " fox", " a", None, " dog", ".", " is", " in", " day"]
    for i, text in enumerate(texts):
        body = next_q(client, round=True)
        assert body["round"]["answered"] == i and body["round"]["size"] == 10
        assert not body["round"]["finished"]
        reveal = answer(client, body["question"]["item_id"], text or "", skipped=text is None)
        assert reveal["round"]["answered"] == i + 1
        assert reveal["round"]["finished"] == (i == 9)
    round_id = reveal["round"]["id"]
    data = client.get(f"/api/play/rounds/{round_id}").get_json()
    result = data["result"]
    assert data["mine"] is True
    assert result["answered"] == 10 and result["finished"] and result["skipped"] == 2
    assert len(result["calls"]) == 10
    guesses = dbs.scalars(select(Guess).order_by(Guess.id)).all()
    assert result["you_correct"] == sum(g.is_correct for g in guesses)
    model_right = 0
    for g in guesses:
        p = dbs.scalar(select(Prediction).where(Prediction.item_id == g.item_id))
        model_right += p.top1_id == dbs.get(Item, g.item_id).token_id
    assert result["model_correct"] == model_right
    # the worst call is a miss, the best call a right answer (or none)
    assert result["worst"] is not None and result["worst"]["you"] in ("wrong", "skip")
    assert result["best"] is None or result["best"]["target"]
    # the share text: a few lines, a grid, the card's address, nobody's id
    text = data["share_text"]
    player_id = dbs.scalar(select(Player.id))
    assert player_id not in text and len(text.splitlines()) == 5
    assert text.splitlines()[2].count("⬜") == 2
    assert data["card_url"].endswith(f"/play/card/{round_id}.svg") and data["card_url"] in text
    # the next call starts a new round
    body = next_q(client, round=True)
    assert body["round"]["id"] != round_id and body["round"]["answered"] == 0


def test_the_card_is_an_svg_without_personal_data(client, dbs):
    body = next_q(client, round=True)
    reveal = answer(client, body["question"]["item_id"], " Qzxv<script>")
    round_id = reveal["round"]["id"]
    response = client.get(f"/play/card/{round_id}.svg")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    svg = response.get_data(as_text=True)
    assert svg.startswith("<svg") and "Me 0/1" in svg
    assert "<script" not in svg.lower() and "Qzxv" not in svg
    assert dbs.scalar(select(Player.id)) not in svg
    assert client.get("/play/card/nope.svg").status_code == 404
    unknown = client.get("/api/play/rounds/nope")
    assert unknown.status_code == 404 and unknown.get_json()["error"]


def test_someone_elses_round_shows_scores_but_not_their_calls(scored_app, client):
    body = next_q(client, round=True)
    round_id = answer(client, body["question"]["item_id"], " Qzxv")["round"]["id"]
    other = scored_app.test_client().get(f"/api/play/rounds/{round_id}").get_json()
    assert other["mine"] is False and other["result"]["best"] is None and other["result"]["worst"] is None
    assert other["result"]["answered"] == 1


def test_asking_for_another_kind_of_round_ends_the_open_one(client):
    first = next_q(client, round=True)
    answer(client, first["question"]["item_id"])
    hard = next_q(client, difficulty="hard")
    assert hard["round"]["id"] != first["round"]["id"] and hard["round"]["answered"] == 0
    assert next_q(client, difficulty="hard")["round"]["id"] == hard["round"]["id"]
    card = client.get(f"/api/play/rounds/{first['round']['id']}").get_json()["result"]
    assert card["finished"] and card["answered"] == 1


def test_free_play_without_rounds_keeps_its_payload(client):
    next_q(client, round=True)
    body = next_q(client)
    assert set(body) == {"question", "stats"}


def test_daily_passage_is_the_same_for_everyone_and_changes_by_date(scored_app, client, dbs):
    with scored_app.app_context():
        from webapp.game import active_model

        model = active_model(db.session, scored_app.config["MODEL"])
        day = date(2026, 11, 30)
        first = rounds.daily_document(db.session, model, day)
        assert first is not None and rounds.daily_document(db.session, model, day).id == first.id
        picks = {rounds.daily_document(db.session, model, day + timedelta(days=i)).id for i in range(20)}
        assert len(picks) == 2  # both test passages come up over 20 days
    a = next_q(client, daily=True)
    b = next_q(scored_app.test_client(), daily=True)
    assert a["round"]["kind"] == "daily" and a["round"]["day"] == rounds.today().isoformat()
    assert a["question"]["item_id"] == b["question"]["item_id"]
    assert a["question"]["document"]["id"] == b["question"]["document"]["id"]


def test_daily_round_board_nickname_and_done(scored_app, client, dbs):
    body = next_q(client, daily=True)
    size = body["round"]["size"]
    assert 1 <= size <= 10
    doc_id = body["question"]["document"]["id"]
    for _ in range(size):
        assert body["question"]["document"]["id"] == doc_id
        reveal = answer(client, body["question"]["item_id"], " the")
        if reveal["round"]["finished"]:
            break
        body = next_q(client, daily=True)
    assert reveal["round"]["finished"]
    # played: asking again says so and points at the finished round
    again = next_q(client, daily=True)
    assert again["question"] is None and again["daily_done"] is True
    assert again["finished_round"] == reveal["round"]["id"]
    board = client.get("/api/play/daily").get_json()
    assert board["streak"] == {"days": 1, "played_today": True}
    [entry] = board["board"]["entries"]
    assert entry["you"] and entry["answered"] == size and entry["name"].startswith("player ")
    player_id = dbs.scalar(select(Player.id))
    assert entry["name"] == f"player {player_id[:6]}"
    # a nickname: validated like room nicknames
    ok = client.post("/api/play/nickname", json={"nickname": "  Ada   L  "})
    assert ok.status_code == 200 and ok.get_json()["nickname"] == "Ada L"
    assert client.get("/api/play/daily").get_json()["board"]["entries"][0]["name"] == "Ada L"
    other = scored_app.test_client()
    alike = other.post("/api/play/nickname", json={"nickname": "ADA l"})
    assert alike.status_code == 400 and "looks the same" in alike.get_json()["error"]
    assert other.post("/api/play/nickname", json={"nickname": "   "}).status_code == 400
    # another player's view marks nobody as "you"
    assert not any(e["you"] for e in other.get("/api/play/daily").get_json()["board"]["entries"])


def test_streak_counts_consecutive_days_of_solo_answers(scored_app, client, dbs):
    body = next_q(client, round=True)
    answer(client, body["question"]["item_id"])
    player_id = dbs.scalar(select(Player.id))
    guess = dbs.scalar(select(Guess))
    items = dbs.scalars(select(Item).where(Item.playable, Item.id != guess.item_id).limit(3)).all()
    now = datetime.now(UTC)
    for days_ago, it in zip((1, 2, 4), items):
        dbs.add(Guess(
            client_key=key(), player_id=player_id, item_id=it.id, model_id=guess.model_id,
            match_rule="exact", server_received_at=now - timedelta(days=days_ago),
        ))
    dbs.commit()
    with scored_app.app_context():
        assert rounds.streak(db.session, player_id) == {"days": 3, "played_today": True}
        tomorrow = rounds.today() + timedelta(days=1)
        assert rounds.streak(db.session, player_id, tomorrow) == {"days": 3, "played_today": False}
        later = rounds.today() + timedelta(days=2)
        assert rounds.streak(db.session, player_id, later)["days"] == 0


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_difficulty_picks_positions_by_the_models_certainty(client, dbs, difficulty):
    seen = 0
    for _ in range(12):
        body = next_q(client, difficulty=difficulty)
        if body["question"] is None:
            break
        assert body["round"]["difficulty"] == difficulty
        p = dbs.scalar(select(Prediction).where(Prediction.item_id == body["question"]["item_id"]))
        if difficulty == "easy":
            assert p.entropy < rounds.EASY_MAX_ENTROPY
        else:
            assert p.entropy > rounds.HARD_MIN_ENTROPY
        reveal = answer(client, body["question"]["item_id"], " the")
        assert "round" in reveal
        seen += 1
    assert seen >= 1


def test_an_open_study_keeps_its_passage_out_of_the_daily(scored_app, dbs):
    from webapp.models import Study, StudyItem

    with scored_app.app_context():
        from webapp.game import active_model

        model = active_model(db.session, scored_app.config["MODEL"])
        daily = rounds.daily_document(db.session, model, rounds.today())
    study = Study(slug="s1", name="S", status="open")
    dbs.add(study)
    dbs.flush()
    first = dbs.scalar(select(Item).where(Item.document_id == daily.id, Item.playable))
    dbs.add(StudyItem(study_id=study.id, item_id=first.id))
    dbs.commit()
    with scored_app.app_context():
        model = active_model(db.session, scored_app.config["MODEL"])
        other = rounds.daily_document(db.session, model, rounds.today())
        assert other is not None and other.id != daily.id
        assert db.session.get(Document, other.id) is not None
