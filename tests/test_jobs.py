"""Background jobs (webapp/jobs.py, Huey): model numbers are never silently missing.

A word-mode study answer arrives over HTTP; the request only queues the job (its word log-prob
is still empty when the reply comes); a real Huey consumer (threads in this process, and the
`humanlm worker` command in a child process) runs it with the real Gemma model; the answer's
word log-prob is filled and the dashboard's count of answers awaiting numbers goes from 1 to 0.
Plus: where the queue lives, one job for many answers, the lease that keeps model work to one
job at a time (and expires when its holder dies), Redis as the queue, and immediate mode.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from research_helpers import answer, consent, current, login, make_researcher, make_study, study_row
from sqlalchemy import select

from webapp import jobs
from webapp.extensions import db
from webapp.launch import humanlm_command
from webapp.models import Guess

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parent.parent


def _guesses(app, study_id):
    with app.app_context():
        session = db.new_session()
        try:
            return list(session.scalars(select(Guess).where(Guess.study_id == study_id).order_by(Guess.id)))
        finally:
            session.close()


def _wait(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def _word_answer(app, client, text: str = "dog") -> tuple[int, Guess]:
    """A word-mode study, one participant, one answer over the HTTP API; returns (study, guess)."""
    study_id = make_study(app, mode="word", items_per_participant=2, pilot=False)
    slug = study_row(app, study_id).slug
    token = consent(client, slug, participant="p-jobs")
    question = current(client, slug)["question"]
    reply = answer(client, slug, token, question["study_item_id"], text)
    assert reply.status_code == 200, reply.get_json()
    [guess] = _guesses(app, study_id)
    return study_id, guess


def _queued(queue) -> int:
    """Jobs waiting: a delayed job sits in the queue until a consumer moves it to the schedule."""
    return queue.huey.pending_count() + queue.huey.scheduled_count()


def _summary(client, study_id) -> dict:
    reply = client.get(f"/api/research/studies/{study_id}/summary")
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return reply.get_json()["model_numbers"]


# ------------------------------------------------------------------------- the queue's place


def test_the_queue_is_a_sqlite_file_beside_the_database_or_redis(tmp_path):
    base = {"DATABASE_URL": f"sqlite:///{tmp_path}/study.db"}
    assert jobs.queue_location(base) == str(tmp_path / "study.jobs.db")
    redis = {**base, "SOCKETIO_MESSAGE_QUEUE": "redis://127.0.0.1:6379/0"}
    assert jobs.queue_location(redis) == "redis://127.0.0.1:6379/0"
    own = {**redis, "JOB_QUEUE": "redis://jobs.example:6379/3"}
    assert jobs.queue_location(own) == "redis://jobs.example:6379/3"
    assert jobs.queue_location({**redis, "JOB_QUEUE": f"sqlite:///{tmp_path}/q.db"}) == f"{tmp_path}/q.db"
    pg = {"DATABASE_URL": "postgresql+psycopg://u@h/db"}
    assert jobs.queue_location(pg).endswith("instance/jobs.db")
    # One queue per database: installs sharing a Redis never run each other's jobs.
    assert jobs.queue_name(base) != jobs.queue_name(pg) and jobs.queue_name(pg) == jobs.queue_name(dict(pg))
    import huey

    assert isinstance(jobs.make_huey(base), huey.SqliteHuey)
    assert (tmp_path / "study.jobs.db").is_file()
    assert isinstance(jobs.make_huey(redis), huey.RedisHuey)
    assert jobs.make_huey({**base, "JOB_QUEUE": "immediate"}).immediate
    shown = jobs.describe_queue(type("A", (), {"config": {**base, "JOB_QUEUE": "redis://:secret@h:1/0"}})())
    assert "secret" not in shown and "h:1" in shown


def test_many_answers_make_one_job(scored_app):
    queue = jobs.jobs_for(scored_app)
    assert queue.request_fill() is True
    assert [queue.request_fill() for _ in range(50)] == [False] * 50
    assert _queued(queue) == 1
    # Once the job has started (the flag is gone), a new answer asks for another run.
    queue.huey.delete(jobs.FILL_FLAG)
    assert queue.request_fill() is True and _queued(queue) == 2


def test_the_lease_keeps_model_work_to_one_job_and_expires_when_its_holder_dies(scored_app):
    queue = jobs.jobs_for(scored_app)
    first, second = jobs.Lease(queue.huey, seconds=60), jobs.Lease(queue.huey, seconds=60)
    assert first.acquire() and not second.acquire()
    first.release()
    assert second.acquire()
    # A holder killed mid-job never releases; its lease runs out instead.
    queue.huey.put(second.key, {"token": "dead:process", "until": time.time() - 1})
    assert first.acquire()
    second.release()  # not its lease any more: nothing happens
    assert not jobs.Lease(queue.huey).acquire()
    first.release()


def test_a_fill_job_waits_while_another_process_holds_the_model(scored_app, client):
    make_researcher(scored_app)
    scored_app.config["JOB_DELAY_SECONDS"] = 0.1
    study_id, _guess = _word_answer(scored_app, client)
    queue = jobs.jobs_for(scored_app)
    other = jobs.Lease(queue.huey)
    assert other.acquire()
    before = _queued(queue)
    assert queue.fill_now() == 0  # did nothing, and asked to be run again later
    assert _queued(queue) == before + 1
    assert _guesses(scored_app, study_id)[0].word_logprob is None
    other.release()


# ------------------------------------------------------------------------- the real consumer


def test_a_word_answer_gets_its_numbers_from_the_consumer_and_the_count_goes_to_zero(scored_app, client):
    make_researcher(scored_app)
    scored_app.config["JOB_DELAY_SECONDS"] = 0.2
    study_id, guess = _word_answer(scored_app, client, "dog")
    # The request only queued the work: the reply came before any number was computed.
    assert guess.mode == "word" and guess.word_logprob is None
    queue = jobs.jobs_for(scored_app)
    assert _queued(queue) == 1
    login(client)
    numbers = _summary(client, study_id)
    assert (numbers["awaiting"], numbers["not_computable"], numbers["total"]) == (1, 0, 1)
    page = client.get(f"/research/studies/{study_id}").get_data(as_text=True)
    assert "Answers awaiting the model&#39;s exact numbers" in page or "Answers awaiting the model's exact numbers" in page

    consumer = jobs.start_in_thread(scored_app)
    try:
        filled = _wait(lambda: _guesses(scored_app, study_id)[0].word_logprob is not None, 120,
                       "the job to fill the word log-prob")
        assert filled
    finally:
        consumer.stop()
    [guess] = _guesses(scored_app, study_id)
    assert guess.word_logprob < 0 and guess.model_id is not None
    numbers = _summary(client, study_id)
    assert (numbers["awaiting"], numbers["total"]) == (0, 0)
    assert numbers["last_run_state"] == "done" and numbers["last_run_at"]
    status = queue.fill_status()
    assert status["filled_words"] == 1 and status["left"] == 0
    # Idempotent: running the job again finds nothing to do and changes nothing.
    assert queue.fill_now() == 0
    assert _guesses(scored_app, study_id)[0].word_logprob == guess.word_logprob


def test_humanlm_worker_runs_the_jobs_and_stops_on_sigint(scored_app, client, tmp_path):
    """The `humanlm worker` command: a Huey consumer in its own process, with the app's settings."""
    make_researcher(scored_app)
    scored_app.config["JOB_DELAY_SECONDS"] = 0.1
    study_id, guess = _word_answer(scored_app, client, "cat")
    assert guess.word_logprob is None
    env = {**os.environ, "DATABASE_URL": scored_app.config["DATABASE_URL"], "HUMANLM_SECRET_KEY": "test",
           "HUMANLM_MODEL": scored_app.config["MODEL"],
           "HUMANLM_MAX_DOCUMENT_TOKENS": str(scored_app.config["MAX_DOCUMENT_TOKENS"]),
           "HUMANLM_TOP_K": str(scored_app.config["TOP_K"]), "HUMANLM_N_THREADS": "2"}
    env.pop("SOCKETIO_MESSAGE_QUEUE", None)
    env.pop("HUMANLM_JOB_QUEUE", None)
    with open(tmp_path / "worker.log", "w+") as log:
        worker = subprocess.Popen(humanlm_command("worker"),
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait(lambda: _guesses(scored_app, study_id)[0].word_logprob is not None, 180,
                  "`humanlm worker` to fill the answer")
            # HUMANLM_WORKER_NICE (10 by default): model work yields the CPU to live answers
            assert os.getpriority(os.PRIO_PROCESS, worker.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
        finally:
            worker.send_signal(signal.SIGINT)
            code = worker.wait(timeout=30)
            log.seek(0)
            output = log.read()
    assert code == 0, output
    assert "Running background jobs" in output and "SQLite file" in output
    login(client)
    assert _summary(client, study_id)["total"] == 0


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def test_redis_is_the_queue_of_many_workers(scored_app, client):
    """With SOCKETIO_MESSAGE_QUEUE on Redis the jobs wait in Redis, and any consumer runs them."""
    if not _redis_up():
        pytest.skip("Redis must run on 127.0.0.1:6379 for this test")
    make_researcher(scored_app)
    scored_app.config.update(JOB_DELAY_SECONDS=0.1, SOCKETIO_MESSAGE_QUEUE="redis://127.0.0.1:6379/0")
    queue = jobs.jobs_for(scored_app)
    import huey

    assert isinstance(queue.huey, huey.RedisHuey)
    queue.huey.flush()  # this test's queue only (named after its own database)
    try:
        study_id, _guess = _word_answer(scored_app, client, "tea")
        assert _queued(queue) == 1
        consumer = jobs.start_in_thread(scored_app)
        try:
            _wait(lambda: _guesses(scored_app, study_id)[0].word_logprob is not None, 120,
                  "the Redis job to fill the answer")
        finally:
            consumer.stop()
    finally:
        queue.huey.flush()


# ------------------------------------------------------------------------- immediate (unit only)


def test_immediate_mode_runs_the_job_in_the_caller(scored_app, client):
    """Unit test only: with JOB_QUEUE=immediate Huey runs the job at once, in the caller (here
    inside the request, which production never does)."""
    scored_app.config.update(JOB_QUEUE="immediate", JOB_DELAY_SECONDS=0)
    _study_id, guess = _word_answer(scored_app, client, "dog")
    assert guess.word_logprob is not None
    assert jobs.jobs_for(scored_app).fill_status()["filled_words"] == 1


def test_a_solo_answer_outside_the_top_k_is_filled_by_the_consumer(scored_app, client):
    """Every mode asks for the numbers it lacks (the solo game here; rooms call the same
    jobs.ask_for_model_numbers): the answer's exact log-prob and rank arrive from the job."""
    import uuid

    from webapp.models import Guess

    scored_app.config["JOB_DELAY_SECONDS"] = 0.2
    question = client.post("/api/play/next", json={}).get_json()["question"]
    reply = client.post("/api/play/guesses", json={
        "item_id": question["item_id"], "client_key": uuid.uuid4().hex, "text": " zebrafishing"})
    assert reply.status_code == 200 and reply.get_json()["model"]["guess_in_top_k"] is False
    assert _queued(jobs.jobs_for(scored_app)) == 1

    def stored():
        with scored_app.app_context():
            return db.session.scalars(select(Guess)).one()

    consumer = jobs.start_in_thread(scored_app)
    try:
        _wait(lambda: stored().model_logprob is not None, 120, "the job to fill the log-prob")
    finally:
        consumer.stop()
    guess = stored()
    assert guess.model_logprob < 0 and guess.model_rank > 64


def test_a_scoring_job_commits_each_document_before_the_next_pass(scored_app, gemma, tokenizer, monkeypatch):
    """On SQLite an open write keeps a live class's answers waiting on the lock, so the job
    process commits every document as it goes (not every 2 s, as the `score` command does):
    when the second document's forward pass starts, another connection already sees the first."""
    import sqlite3

    from support import SHORT_TEXTS

    from webapp.corpus import get_or_create_corpus, import_documents

    with scored_app.app_context():
        session = db.new_session()
        corpus = get_or_create_corpus(session, "fresh", min_prefix_tokens=3)
        import_documents(session, corpus, SHORT_TEXTS, tokenizer, max_tokens=128)
        session.commit()
        corpus_id = corpus.id
        session.close()
    path = scored_app.config["DATABASE_URL"].removeprefix("sqlite:///")
    seen: list[int] = []

    class Watching:
        """The real model; before each forward pass, what another connection can read."""

        def __getattr__(self, name):
            return getattr(gemma, name)

        def score_continuations(self, *args, **kwargs):
            with sqlite3.connect(path) as other:
                seen.append(other.execute(
                    "SELECT count(*) FROM scored_documents s JOIN documents d ON d.id = s.document_id "
                    "WHERE d.corpus_id = ?", (corpus_id,)).fetchone()[0])
            return gemma.score_continuations(*args, **kwargs)

    monkeypatch.setattr(jobs, "job_model", lambda _cfg: Watching())
    assert jobs.jobs_for(scored_app).score_now(corpus_id) == 2
    assert seen == [0, 1]
