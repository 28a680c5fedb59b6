"""Background jobs: the model work that answers and uploads need later, run by Huey.

Why jobs: a web request never runs the model (a forward pass takes seconds and the model holds
about a gigabyte). What a request needs from the model later is queued here instead:

- `fill_answers`: the exact model numbers of every answer that lacks them (a word-mode answer's
  word log-prob, an answer whose first token is outside the stored top-k). ONE job handles every
  pending answer, whatever asked for it: `request_fill()` schedules it a few seconds ahead
  (HUMANLM_JOB_DELAY_SECONDS) unless one is already waiting, so a class answering at once makes
  one job, not hundreds. The job is idempotent (it fills only what is still empty) and calls the
  same function as `humanlm score --fill-guesses` (webapp.predictions.run_model_work). The same
  job gives every answer and answered item its log-probs under each model's own tokens
  (webapp.predictions.fill_model_scores, as `humanlm score --answers`): the configured model's
  first, then each of HUMANLM_COMPARE_MODELS, one model in memory at a time.
- `score_corpus`: scoring the passages a researcher uploaded from the dashboard (the same
  function as `humanlm score --corpus NAME`); its progress is read from the database.

The job library is Huey (https://huey.readthedocs.io): its SQLite storage needs nothing besides
a file (the laptop default: `<database>.jobs.db` next to the SQLite database, or instance/jobs.db),
and RedisHuey shares one queue between many server processes and machines. HUMANLM_JOB_QUEUE
chooses (unset: the Redis of SOCKETIO_MESSAGE_QUEUE when that is set, else the SQLite file). The
queue is named after the database, so installs sharing one Redis never run each other's jobs.

Who runs them: `humanlm worker` (a Huey consumer in the foreground, stopped by Ctrl+C or
SIGTERM); `humanlm serve` starts one as a process of its own next to the web worker and stops
it with the server (HUMANLM_SERVE_JOBS=false turns that off when separate workers run). Not a
thread of the web worker: the model would share its interpreter lock with a class answering.
Model work is one job at a time across every consumer of a queue: a lease in the queue's
storage, renewed while the job runs and expiring two minutes after a holder dies, so a killed
process never blocks the queue for good. A consumer that starts asks for a fill (late, so a
short-lived process does not load the model) and picks up uploads whose scoring was cut off.

Callers pass the app (for its settings and app context); Flask is imported only to run a job
inside an app context.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from .config import INSTANCE_DIR
from .extensions import db
from .models import Corpus, Document, Guess, LanguageModel, ScoredDocument

log = logging.getLogger("humanlm.jobs")

FILL_FLAG = "fill-requested"  # set while a fill job waits to run (the debounce)
FILL_STATUS = "fill-status"
CORPUS_STATUS = "corpus-status:{}"
CORPUS_JOBS = "corpus-jobs"  # corpus ids whose scoring a consumer must finish
LEASE_SECONDS = 120.0  # a dead holder's lease on the model expires after this
LOCKED_RETRY_SECONDS = 15.0  # a job that finds the model busy elsewhere tries again after this
STALE_FLAG_SECONDS = 900.0  # a fill flag this old: its job was lost; schedule another
STARTUP_FILL_SECONDS = 30.0  # a starting consumer's catch-up fill waits this long
MODEL_IDLE_SECONDS = 300.0  # the job model is let go after this long without a job
ACTIVE_STATES = ("queued", "waiting", "running")


# ----------------------------------------------------------------------- what is awaited


def lacks_model_numbers() -> ColumnElement[bool]:
    """Answers without their exact model numbers: a first token with no log-prob (outside the
    stored top-k, or imported unscored), a word-mode answer with no word log-prob, or a stated
    distribution with a candidate outside the top-k (no log score on its cells yet). Skips have
    nothing to score."""
    return or_(
        and_(Guess.first_token_id.is_not(None), Guess.model_logprob.is_(None)),
        and_(Guess.mode == "word", Guess.skipped.is_(False), Guess.word_logprob.is_(None)),
        and_(Guess.mode == "distribution", Guess.skipped.is_(False), Guess.model_logprob.is_(None)),
    )


def configured_model_ids(session: Session, config) -> list[int]:
    """Scoring runs of the configured model and top-k (the rows a fill job writes for)."""
    return list(session.scalars(select(LanguageModel.id).where(
        LanguageModel.spec == config["MODEL"], LanguageModel.top_k == config["TOP_K"])))


def compare_specs(config) -> list[str]:
    """HUMANLM_COMPARE_MODELS as a list of specs (the configured model and repeats left out)."""
    specs = []
    for spec in (config.get("COMPARE_MODELS") or "").split(","):
        spec = spec.strip()
        if spec and spec != config["MODEL"] and spec not in specs:
            specs.append(spec)
    return specs


def model_ids_for(session: Session, spec: str, top_k: int) -> list[int]:
    """Scoring runs of a model spec at this top-k (several when its file changed)."""
    return list(session.scalars(select(LanguageModel.id).where(
        LanguageModel.spec == spec, LanguageModel.top_k == top_k)))


def fillable(session: Session, config) -> ColumnElement[bool]:
    """Answers a fill job with the configured model completes: those lacking numbers that are
    tied to no model yet or to a scoring run of this one (as `score --fill-guesses` does)."""
    ids = configured_model_ids(session, config)
    owned = Guess.model_id.is_(None) if not ids else or_(Guess.model_id.is_(None),
                                                         Guess.model_id.in_(ids))
    return and_(lacks_model_numbers(), owned)


@dataclass
class AwaitedNumbers:
    """Answers (of some selection) still without model numbers, for the dashboard."""

    awaiting: int  # not yet seen by a fill job: computed soon
    not_computable: int  # a fill job ran after they arrived and could not compute them
    oldest_awaiting_at: Any = None  # when the oldest awaiting answer arrived (UTC)

    def as_dict(self) -> dict:
        oldest = self.oldest_awaiting_at
        return {"awaiting": self.awaiting, "not_computable": self.not_computable,
                "total": self.awaiting + self.not_computable,
                "oldest_awaiting_at": oldest.isoformat() if oldest is not None else None}


def awaited_numbers(session: Session, config, *where, checked_through: int | None = None) -> AwaitedNumbers:
    """How many answers matching `where` still await their model numbers. `checked_through` is
    the last answer id a finished fill job had seen: what it left empty cannot be computed."""
    pending = [fillable(session, config), *where]
    newer = Guess.id > checked_through if checked_through is not None else None
    awaiting_where = [*pending, newer] if newer is not None else pending
    awaiting, oldest = session.execute(
        select(func.count(Guess.id), func.min(Guess.server_received_at)).where(*awaiting_where)
    ).one()
    left = 0
    if checked_through is not None:
        left = session.scalar(select(func.count(Guess.id)).where(*pending, Guess.id <= checked_through))
    return AwaitedNumbers(awaiting, left, oldest)


def ask_for_model_numbers(app, guess: Guess) -> None:
    """After an answer is committed (any mode): queue the fill job (the model never runs in a
    request). Every answer needs it: for its exact numbers when it lacks them
    (lacks_model_numbers), and for its (and its item's) log-probs under the configured and the
    compared models (answer_model_scores, item_model_scores). A queue that is down loses no
    answer: the next answer, a worker start or a look at the dashboard asks again."""
    # A fill asked for in this process less than a delay ago runs after this answer was stored
    # and fills it too: a class answering at once asks the queue once, not 200 times.
    now = time.monotonic()
    window = float(app.config.get("JOB_DELAY_SECONDS") or 0)
    with _asked_lock:
        if window > 0 and now - _asked.get(id(app), -1e9) < window:
            return
        _asked[id(app)] = now
    try:
        jobs_for(app).request_fill()
    except Exception:
        with _asked_lock:
            _asked.pop(id(app), None)
        app.logger.warning("could not queue the model numbers of an answer", exc_info=True)


_asked: dict[int, float] = {}
_asked_lock = threading.Lock()


def corpus_progress(session: Session, config, corpus: Corpus) -> dict:
    """Documents and tokens of a corpus, and how many the configured model has scored."""
    ids = configured_model_ids(session, config)
    docs, tokens = session.execute(
        select(func.count(Document.id), func.coalesce(func.sum(Document.n_tokens), 0))
        .where(Document.corpus_id == corpus.id)
    ).one()
    scored_docs = scored_tokens = 0
    if ids:
        scored_docs, scored_tokens = session.execute(
            select(func.count(func.distinct(Document.id)),
                   func.coalesce(func.sum(Document.n_tokens), 0))
            .where(Document.corpus_id == corpus.id, Document.id.in_(
                select(ScoredDocument.document_id).where(ScoredDocument.model_id.in_(ids))))
        ).one()
    return {"documents": docs, "tokens": int(tokens), "scored_documents": scored_docs,
            "scored_tokens": int(scored_tokens),
            "fraction": (scored_tokens / tokens) if tokens else 1.0}


# ------------------------------------------------------------------------------ the queue


def queue_location(config) -> str:
    """Where the queue lives: a redis:// URL, a SQLite file path, or "immediate" (unit tests:
    a job runs at once in the caller, in memory)."""
    chosen = (config.get("JOB_QUEUE") or "").strip()
    if not chosen:
        socketio_queue = config.get("SOCKETIO_MESSAGE_QUEUE") or ""
        if socketio_queue.startswith(("redis://", "rediss://", "unix://")):
            return socketio_queue
        return str(_default_sqlite_file(config.get("DATABASE_URL") or ""))
    if chosen.startswith("sqlite:///"):
        return chosen.removeprefix("sqlite:///")
    return chosen


def _default_sqlite_file(database_url: str) -> Path:
    """`<name>.jobs.db` beside a SQLite database file; instance/jobs.db for any other database."""
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///").split("?", 1)[0]
        if path and path != ":memory:":
            db_file = Path(path)
            return db_file.with_name(f"{db_file.stem}.jobs.db")
    return INSTANCE_DIR / "jobs.db"


def queue_name(config) -> str:
    """Processes that share a database share a queue; other databases never see its jobs."""
    digest = hashlib.sha256((config.get("DATABASE_URL") or "").encode()).hexdigest()[:12]
    return f"humanlm-{digest}"


def make_huey(config):
    """The Huey instance for these settings (see queue_location)."""
    import huey

    where, name = queue_location(config), queue_name(config)
    options = {"results": False, "utc": True}
    if where == "immediate":
        return huey.MemoryHuey(name, immediate=True, **options)
    if where.startswith(("redis://", "rediss://", "unix://")):
        return huey.RedisHuey(name, url=where, **options)
    Path(where).parent.mkdir(parents=True, exist_ok=True)
    return huey.SqliteHuey(name, filename=where, **options)


class Lease:
    """Model work, one job at a time across every consumer of the queue.

    A key in the queue's storage names its holder and an expiry; the holder renews it while it
    works, so a process killed mid-job blocks others for at most LEASE_SECONDS. (Huey's own
    task locks have no expiry on SQLite: a killed holder would keep them for good.)"""

    def __init__(self, huey, name: str = "model-work", seconds: float = LEASE_SECONDS) -> None:
        self.huey, self.key, self.seconds = huey, f"lease:{name}", seconds
        self.token = f"{os.getpid()}:{uuid.uuid4().hex}"

    def _value(self) -> dict:
        return {"token": self.token, "until": time.time() + self.seconds}

    def acquire(self) -> bool:
        if self.huey.put_if_empty(self.key, self._value()):
            return True
        held = self.huey.get(self.key, peek=True)
        if held is not None and held.get("until", 0) > time.time():
            return False
        self.huey.delete(self.key)  # its holder died: take it over
        return bool(self.huey.put_if_empty(self.key, self._value()))

    def renew(self) -> None:
        held = self.huey.get(self.key, peek=True)
        if held is None or held.get("token") == self.token:
            self.huey.put(self.key, self._value())

    def release(self) -> None:
        held = self.huey.get(self.key, peek=True)
        if held is not None and held.get("token") == self.token:
            self.huey.delete(self.key)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep the (acquired) lease renewed while the block runs; release it afterwards."""
        done = threading.Event()

        def keep() -> None:
            while not done.wait(self.seconds / 4):
                try:
                    self.renew()
                except Exception:  # storage hiccup: the next renewal retries
                    log.warning("could not renew the model lease", exc_info=True)

        keeper = threading.Thread(target=keep, name="humanlm-lease", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join(timeout=5)
            self.release()


# ------------------------------------------------------------------------- the job model

_model_lock = threading.RLock()  # one llama.cpp context per process: one pass at a time
_models: dict[tuple, Any] = {}
_last_used: dict[tuple, float] = {}


def job_model(config):
    """The scoring model of the jobs, opened once per process (with the CLI's settings) and let
    go after MODEL_IDLE_SECONDS without a job; hold `_model_lock` while using it."""
    from .lm import load_model

    key = (config["MODEL"], config["MAX_DOCUMENT_TOKENS"], config["N_THREADS"])
    with _model_lock:
        if key not in _models:
            log.info("loading %s for background jobs", key[0])
            _models[key] = load_model(key[0], max_tokens=key[1], n_threads=key[2])
        _last_used[key] = time.monotonic()
        timer = threading.Timer(MODEL_IDLE_SECONDS + 1, _drop_idle_models)
        timer.daemon = True
        timer.start()
        return _models[key]


def _drop_all_models() -> None:
    """Let go of every job model (before another one is loaded: one in memory at a time)."""
    with _model_lock:
        _models.clear()
        _last_used.clear()


def _drop_idle_models() -> None:
    with _model_lock:
        now = time.monotonic()
        for key in [k for k, used in _last_used.items() if now - used >= MODEL_IDLE_SECONDS]:
            _models.pop(key, None)
            _last_used.pop(key, None)


# ----------------------------------------------------------------------------------- jobs


class Jobs:
    """The queue of one app, its two tasks, and its consumers."""

    def __init__(self, app) -> None:
        self.app = _real(app)
        self.config = self.app.config
        self.huey = make_huey(app.config)
        self.location = queue_location(app.config)
        self.fill_task = self.huey.task(name="fill_answers", retries=3, retry_delay=30)(self.fill_now)
        self.score_task = self.huey.task(name="score_corpus", retries=3, retry_delay=30)(self.score_now)

    def _app_context(self):
        """The app's context for a job; the caller's own when it is already in one (immediate
        mode runs a job inside the request, whose session must stay open)."""
        from flask import current_app, has_app_context

        if has_app_context() and current_app._get_current_object() is self.app:
            return contextlib.nullcontext()
        return self.app.app_context()

    # ------------------------------------------------------------------ asking for work

    def _delay(self) -> float:
        return float(self.config.get("JOB_DELAY_SECONDS", 2.0))

    def request_fill(self, delay: float | None = None, *, force: bool = False) -> bool:
        """Make sure a fill job runs soon (in `delay` seconds); returns whether this call queued
        one (False: one is already waiting and will see the new answers too)."""
        delay = self._delay() if delay is None else delay
        now = time.time()
        if not force and not self.huey.put_if_empty(FILL_FLAG, now):
            flagged = self.huey.get(FILL_FLAG, peek=True)
            if flagged is not None and now - flagged < STALE_FLAG_SECONDS:
                return False
        self.huey.put(FILL_FLAG, now)
        self._enqueue(self.fill_task, (), delay)
        return True

    def request_scoring(self, corpus_id: int, delay: float = 0.0) -> None:
        """Queue the scoring of a corpus's unscored documents (an upload from the dashboard)."""
        self.set_corpus_status(corpus_id, "queued")
        active = set(self.huey.get(CORPUS_JOBS, peek=True) or []) | {corpus_id}
        self.huey.put(CORPUS_JOBS, sorted(active))
        self._enqueue(self.score_task, (corpus_id,), delay)

    def _enqueue(self, task, args: tuple, delay: float) -> None:
        if delay > 0 and not self.huey.immediate:
            task.schedule(args, delay=delay)
        else:
            task(*args)

    # ------------------------------------------------------------------ status

    def fill_status(self) -> dict:
        return self.huey.get(FILL_STATUS, peek=True) or {}

    def corpus_status(self, corpus_id: int) -> dict:
        return self.huey.get(CORPUS_STATUS.format(corpus_id), peek=True) or {}

    def set_corpus_status(self, corpus_id: int, state: str, **extra) -> None:
        self.huey.put(CORPUS_STATUS.format(corpus_id),
                      {"state": state, "updated_at": time.time(), **extra})

    def awaited(self, session: Session, *where) -> AwaitedNumbers:
        return awaited_numbers(session, self.config, *where,
                               checked_through=self.fill_status().get("checked_through"))

    # ------------------------------------------------------------------ the work

    def fill_now(self) -> int:
        """The fill job: every answer that lacks its model numbers gets them, ONE pass per
        document for first tokens and words alike (`run_model_work`, as `humanlm score
        --fill-guesses`); then every answer and answered item gets its log-probs under the
        configured model's own tokens and under each of HUMANLM_COMPARE_MODELS
        (`fill_model_scores`, as `humanlm score --answers`). Returns the number of answers
        whose exact numbers were completed."""
        from .predictions import (
            JOB_COMMIT_SECONDS,
            fill_model_scores,
            pending_model_scores,
            run_model_work,
        )

        self.huey.delete(FILL_FLAG)  # an answer stored from now on asks for another run
        cfg = self.config
        with self._app_context():
            session = db.new_session()
            try:
                checked = self.fill_status().get("checked_through")
                new = awaited_numbers(session, cfg, checked_through=checked).awaiting
                own = sum(pending_model_scores(session, configured_model_ids(session, cfg)))
                others = [spec for spec in compare_specs(cfg) if sum(pending_model_scores(
                    session, model_ids_for(session, spec, cfg["TOP_K"])))]
                if not new and not own and not others:
                    return 0
                lease = Lease(self.huey)
                if not lease.acquire():
                    self.request_fill(LOCKED_RETRY_SECONDS)  # another process has the model
                    return 0
                with lease.held():
                    mark = session.scalar(select(func.max(Guess.id))) or 0
                    before = session.scalar(select(func.count(Guess.id)).where(
                        fillable(session, cfg), Guess.id <= mark))
                    started = time.time()
                    self.huey.put(FILL_STATUS, {**self.fill_status(), "state": "running",
                                                "started_at": started})
                    guesses = words = 0
                    scored: dict[str, dict] = {}
                    try:
                        if new or own:
                            with _model_lock:
                                model = job_model(cfg)
                                report = run_model_work(session, model, top_k=cfg["TOP_K"],
                                                        predictions=False, guesses=True,
                                                        words=True,
                                                        commit_seconds=JOB_COMMIT_SECONDS)
                                guesses, words = report.guesses, report.words
                                got = fill_model_scores(session, model, top_k=cfg["TOP_K"])
                                scored[cfg["MODEL"]] = {"answers": got.answers, "items": got.items}
                    except Exception as exc:
                        session.rollback()
                        self.huey.put(FILL_STATUS, {**self.fill_status(), "state": "failed",
                                                    "error": str(exc), "finished_at": time.time()})
                        raise  # Huey retries it (the answers stay pending until it works)
                    for spec in others:
                        scored[spec] = self._fill_compared(session, spec)
                left = session.scalar(select(func.count(Guess.id)).where(
                    fillable(session, cfg), Guess.id <= mark))
                self.huey.put(FILL_STATUS, {
                    "state": "done", "started_at": started, "finished_at": time.time(),
                    "filled": before - left, "filled_guesses": guesses, "filled_words": words,
                    "left": left,
                    "checked_through": mark,
                    "answer_scores": scored,
                })
                log.info("filled the model numbers of %d answers (%d first tokens, %d words); "
                         "%d could not be computed; log-probs under each model: %s",
                         before - left, guesses, words, left, scored)
                return before - left
            finally:
                session.close()

    def _fill_compared(self, session: Session, spec: str) -> dict:
        """One of HUMANLM_COMPARE_MODELS: loaded after every other job model is let go (one
        model in memory at a time), its log-probs of every answer and item filled, and let go.
        A failure (a bad spec, a server down) is logged and reported in the fill status; it
        does not hold up the configured model's numbers, and the next job tries again."""
        from .lm import load_model
        from .predictions import fill_model_scores

        cfg = self.config
        try:
            with _model_lock:
                _drop_all_models()
                log.info("loading %s to compare (background jobs)", spec)
                model = load_model(spec, max_tokens=cfg["MAX_DOCUMENT_TOKENS"],
                                   n_threads=cfg["N_THREADS"])
                try:
                    got = fill_model_scores(session, model, top_k=cfg["TOP_K"])
                finally:
                    del model  # freed now, before the next one is loaded
            return {"answers": got.answers, "items": got.items}
        except Exception as exc:  # noqa: BLE001 (reported; the next job tries again)
            session.rollback()
            log.warning("could not fill the log-probs of answers under %s: %s", spec, exc)
            return {"error": str(exc)}

    def score_now(self, corpus_id: int) -> int:
        """The scoring job of an uploaded corpus: `score_corpus` with the configured model, one
        forward pass per unscored document, committed as it goes (progress is read from the
        database). Returns the number of documents scored."""
        from .predictions import JOB_COMMIT_SECONDS, TokenizerMismatch, score_corpus

        cfg = self.config
        with self._app_context():
            session = db.new_session()
            try:
                corpus = session.get(Corpus, corpus_id)
                if corpus is None:
                    self._corpus_finished(corpus_id)
                    return 0
                lease = Lease(self.huey)
                if not lease.acquire():
                    self.set_corpus_status(corpus_id, "waiting")
                    self._enqueue(self.score_task, (corpus_id,), LOCKED_RETRY_SECONDS)
                    return 0
                with lease.held():
                    self.set_corpus_status(corpus_id, "running", started_at=time.time())
                    try:
                        with _model_lock:
                            model = job_model(cfg)
                            report = score_corpus(session, model, top_k=cfg["TOP_K"],
                                                  corpus=corpus.name,
                                                  commit_seconds=JOB_COMMIT_SECONDS)
                    except TokenizerMismatch as exc:  # no retry helps: say so and stop
                        session.rollback()
                        self.set_corpus_status(corpus_id, "failed", error=str(exc))
                        self._corpus_finished(corpus_id)
                        return 0
                    except Exception as exc:
                        session.rollback()
                        self.set_corpus_status(corpus_id, "failed", error=str(exc))
                        raise
                self.set_corpus_status(corpus_id, "done", documents=report.documents,
                                       tokens=report.tokens, finished_at=time.time())
                self._corpus_finished(corpus_id)
                return report.documents
            finally:
                session.close()

    def _corpus_finished(self, corpus_id: int) -> None:
        active = set(self.huey.get(CORPUS_JOBS, peek=True) or []) - {corpus_id}
        self.huey.put(CORPUS_JOBS, sorted(active))

    # ------------------------------------------------------------------ consumers

    def catch_up(self) -> None:
        """What a starting consumer asks for: a fill (late: a process that lives for seconds
        does not load the model), and the scoring of uploads a stopped process left unfinished."""
        self.request_fill(STARTUP_FILL_SECONDS, force=True)
        for corpus_id in self.huey.get(CORPUS_JOBS, peek=True) or []:
            state = self.corpus_status(corpus_id).get("state")
            if state in ACTIVE_STATES or state is None:
                stale = time.time() - self.corpus_status(corpus_id).get("updated_at", 0)
                if state != "queued" or stale > STALE_FLAG_SECONDS:
                    self._enqueue(self.score_task, (corpus_id,), 1.0)

    def consumer(self, *, in_thread: bool):
        """A Huey consumer with one worker thread (the model is one context). `in_thread`: for
        a thread inside a server process (no signal handlers; the server owns the signals)."""
        from huey.consumer import Consumer

        class ThreadConsumer(Consumer):
            def _set_signal_handlers(self) -> None:
                pass

        kind = ThreadConsumer if in_thread else Consumer
        return kind(self.huey, workers=1, periodic=False, worker_type="thread",
                    initial_delay=0.1, backoff=1.15, max_delay=2.0, scheduler_interval=1,
                    shutdown_timeout=10)


def _real(app):
    """The app itself, not Flask's `current_app` proxy (jobs run where no app context is)."""
    getter = getattr(app, "_get_current_object", None)
    return getter() if getter is not None else app


_jobs_lock = threading.Lock()
EXTENSION = "humanlm.jobs"


def jobs_for(app) -> Jobs:
    """The app's job queue (created on first use, once per process)."""
    app = _real(app)
    jobs = app.extensions.get(EXTENSION)
    if jobs is None:
        with _jobs_lock:
            jobs = app.extensions.get(EXTENSION)
            if jobs is None:
                jobs = app.extensions[EXTENSION] = Jobs(app)
    return jobs


class BackgroundConsumer:
    """A consumer running in threads of this process (`humanlm serve --debug`, tests)."""

    def __init__(self, app) -> None:
        self.jobs = jobs_for(app)
        self.consumer = self.jobs.consumer(in_thread=True)

    def start(self) -> BackgroundConsumer:
        self.consumer.start()
        self.jobs.catch_up()
        return self

    def stop(self) -> None:
        self.consumer.stop(graceful=True)


def start_in_thread(app) -> BackgroundConsumer:
    """Run the app's jobs in background threads of this process; returns a handle to stop."""
    return BackgroundConsumer(app).start()


def run_consumer(app) -> None:
    """`humanlm worker`: run the jobs in the foreground until SIGINT or SIGTERM (a job running
    then is finished first, for at most 10 seconds; an interrupted one is picked up again)."""
    jobs = jobs_for(app)
    consumer = jobs.consumer(in_thread=False)
    jobs.catch_up()
    consumer.run()


def describe_queue(app) -> str:
    """Where the app's jobs wait, for a log line (a Redis password is not shown)."""
    from urllib.parse import urlsplit

    location = queue_location(app.config)
    if location == "immediate":
        return "immediate (in the caller, for tests)"
    if location.startswith(("redis://", "rediss://", "unix://")):
        parts = urlsplit(location)
        if parts.password:
            host = parts.netloc.rsplit("@", 1)[-1]
            location = parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()
        return f"Redis {location}"
    return f"SQLite file {location}"
