"""Pages and JSON API of online studies. Thin: read the request, call setup.py, participants.py,
dashboard.py or auth.py, reply.

Researcher side (login required): /research/... pages, /api/research/... JSON, the export zip.
Participant side (no account; a signed session cookie remembers which participant this browser
is in each study): /s/<slug> -> consent -> instructions -> task (items one at a time through
/api/s/<slug>/...) -> done (completion code and/or redirect).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from itertools import chain
from urllib.parse import urlparse

from flask import (
    Response,
    abort,
    current_app,
    flash,
    g,
    get_flashed_messages,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask_wtf.csrf import CSRFError
from sqlalchemy import func, select

from .. import jobs
from ..answers import AnswerRefused, StudyAnswerIn
from ..api import accepts, parse_body
from ..extensions import db, limiter
from ..game import active_model
from ..green import in_native_thread
from ..judgements import pair_payload
from ..lm import load_tokenizer
from ..models import Corpus, CorpusPurpose, Document, Guess, Participant, ScoredDocument, Study
from . import auth, bp, csrf, uploads
from .dashboard import fill_histogram, item_fill_rows, study_summary
from .participants import (
    EntryRefused,
    captured_params,
    external_id_of,
    progress,
    question_mode,
    redirect_target,
    resumable_run,
    start_participant,
    study_pair,
    study_question_payload,
    submit_answer,
)
from .setup import (
    DEFAULT_CONSENT,
    DEFAULT_INSTRUCTIONS,
    FIELDS,
    StudyError,
    allow_skip,
    create_study,
    paragraphs,
    set_pilot,
)

PARTICIPANTS_KEY = "study_participants"  # session: {slug: participant id}
EXPORT_FORMATS = ("csv", "jsonl", "parquet")
PARTICIPANT_ROWS = 100
STALLED_MINUTES = 10  # answers awaiting model numbers this long: is a job worker running?


# ------------------------------------------------------------------------------ request hooks


@bp.url_value_preprocessor
def allow_uploads(endpoint: str | None, _values) -> None:
    """The passage upload may be larger than any other request (up to HUMANLM_MAX_IMPORT_BYTES,
    the app's limit is 64 KB): its limit is raised here, because URL preprocessors run before
    every before_request hook, and the app's first hook already reads the form."""
    if endpoint == "research.upload_corpus" and request.method == "POST":
        request.max_content_length = current_app.config["MAX_IMPORT_BYTES"] + uploads.FORM_OVERHEAD


@bp.before_request
def protect_forms() -> None:
    """Every state-changing request to this blueprint needs the session's CSRF token."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()


def _with_detail(message: str, detail: object) -> str:
    """`message (detail)`, or the message alone when there is no detail (never an empty "()")."""
    detail = str(detail or "").strip()
    return f"{message} ({detail})" if detail else message


@bp.errorhandler(CSRFError)
def csrf_error(exc: CSRFError):
    message = ("This form has expired or was not sent from this site. Reload the page and try "
               "again (this site needs cookies to be allowed).")
    current_app.logger.warning("CSRF refused on %s: %s", request.path, exc.description)
    if request.path.startswith("/api/"):
        return jsonify(error=_with_detail(message, exc.description)), 400
    referrer = urlparse(request.referrer or "")
    back = None
    if referrer.netloc == request.host and referrer.path:
        back = referrer.path + (f"?{referrer.query}" if referrer.query else "")
    if request.path.startswith("/s/"):
        return render_template("research/participant/message.html", title="Please try again",
                               message=message, study=None, code="", back=back), 400
    return render_template("research/message.html", title="Please try again", message=message,
                           back=back), 400


@bp.app_template_filter("paragraphs")
def paragraphs_filter(text: str | None) -> list[str]:
    """Consent and instructions as paragraphs, whatever line endings were stored."""
    return paragraphs(text)


@bp.context_processor
def researcher_context() -> dict:
    return {"researcher": g.get("researcher")}


def _tokenizer():
    return load_tokenizer(current_app.config["MODEL"])


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------------ login


def _login_limits() -> str:
    return current_app.config["LOGIN_LIMITS"]


def _login_email() -> str:
    """The per-account throttle's key: the e-mail typed, whether or not such an account exists
    (so the throttle says nothing about which accounts exist)."""
    return "login:" + auth.normalize_email(request.form.get("email", "")[:254])


def _failed_login(response) -> bool:
    return response.status_code != 302  # only failed attempts count against the limits


@bp.route("/research/login", methods=["GET", "POST"])
@limiter.limit(_login_limits, methods=["POST"], deduct_when=_failed_login)
@limiter.limit(_login_limits, methods=["POST"], key_func=_login_email, deduct_when=_failed_login)
def login():
    next_url = auth.safe_next(request.values.get("next"))
    error = None
    email = ""
    status = 200
    if request.method == "POST":
        email = request.form.get("email", "")[:254]
        password = request.form.get("password", "")[:1000]
        try:
            researcher = auth.authenticate(db.session, email, password)
        except auth.LoginBusy as busy:
            researcher, error, status = None, str(busy).capitalize() + ".", 503
        if researcher is None:
            error, status = error or "Wrong e-mail or password.", status if error else 401
            db.session.rollback()
        else:
            session.pop("csrf_token", None)  # a fresh CSRF secret for the logged-in researcher
            auth.login(db.session, researcher)
            db.session.commit()
            return redirect(next_url or url_for("research.dashboard"))
    elif auth.current_researcher(db.session) is not None:
        return redirect(next_url or url_for("research.dashboard"))
    expired = request.args.get("expired") == "1"
    return render_template("research/login.html", error=error, email=email, next_url=next_url,
                           expired=expired), status


@bp.errorhandler(429)
def too_many_attempts(exc):
    """The login throttle: the same words whether the address or the account hit its limit."""
    message = (_with_detail("Too many failed logins from here or for this account", exc.description)
               + ". Wait a few minutes, then try again.")
    if request.path.startswith("/api/"):
        return jsonify(error=message), 429
    return render_template("research/login.html", error=message,
                           email=request.form.get("email", "")[:254], next_url=None,
                           expired=False), 429


@bp.post("/research/logout")
def logout():
    auth.logout(db.session)
    return redirect(url_for("research.login"))


# -------------------------------------------------------------------------------- dashboard


def _study_or_404(study_id: int) -> Study:
    """The study, if the logged-in researcher may see it; another researcher's study is a 404
    like a missing one (its existence is not revealed)."""
    study = db.session.get(Study, study_id)
    if study is None or not auth.may_access(db.session, g.researcher, study):
        abort(404, description=f"there is no study {study_id}")
    return study


def _study_link(study: Study) -> str:
    base = (current_app.config.get("PUBLIC_URL") or request.host_url).rstrip("/")
    return f"{base}/s/{study.slug}"


@bp.get("/research/")
@auth.login_required
def dashboard():
    rows = []
    mine = auth.visible_studies(g.researcher)
    for study in db.session.scalars(mine.order_by(Study.created_at.desc(), Study.id.desc())):
        rows.append({"study": study, "summary": _summary(study), "link": _study_link(study)})
    return render_template("research/dashboard.html", rows=rows, formats=EXPORT_FORMATS,
                           messages=get_flashed_messages(with_categories=True))


def _model_numbers(study: Study) -> dict:
    """How many of the study's answers still await the model's exact numbers (computed by the
    background jobs); asks for a fill when some do and none is waiting (a lost request, a queue
    that was down), so the count cannot stay up silently."""
    try:
        queue = jobs.jobs_for(current_app)
        numbers = queue.awaited(db.session, Guess.study_id == study.id).as_dict()
        if numbers["awaiting"]:
            queue.request_fill()
        last = queue.fill_status()
    except Exception:  # the queue's storage is down: count from the database alone
        current_app.logger.warning("job queue unavailable", exc_info=True)
        numbers = jobs.awaited_numbers(db.session, current_app.config,
                                       Guess.study_id == study.id).as_dict()
        last = {}
    oldest = numbers["oldest_awaiting_at"]
    numbers["stalled"] = bool(
        oldest and (_now() - datetime.fromisoformat(oldest)).total_seconds() > STALLED_MINUTES * 60)
    numbers["last_run_at"] = (datetime.fromtimestamp(last["finished_at"], UTC).isoformat()
                              if last.get("finished_at") else None)
    numbers["last_run_state"] = last.get("state")
    return numbers


def _summary(study: Study) -> dict:
    """The dashboard's numbers of a study: study_summary plus the answers awaiting model numbers."""
    summary = study_summary(db.session, study)
    summary["model_numbers"] = _model_numbers(study)
    return summary


def _corpus_choices() -> list[dict]:
    model = active_model(db.session, current_app.config["MODEL"])
    out = []
    for corpus in db.session.scalars(select(Corpus).where(Corpus.purpose == CorpusPurpose.GAME).order_by(Corpus.name)):
        n_scored = 0
        if model is not None:
            n_scored = db.session.scalar(
                select(func.count(ScoredDocument.id))
                .join(Document, Document.id == ScoredDocument.document_id)
                .where(Document.corpus_id == corpus.id, ScoredDocument.model_id == model.id)
            )
        out.append({"name": corpus.name, "n_scored": n_scored})
    return out


def _form_to_spec(form) -> tuple[dict, dict[str, str]]:
    """The set-up form as the same dict a YAML/JSON study file gives."""
    errors: dict[str, str] = {}
    spec: dict = {
        key: form.get(key, "").strip()
        for key in ("name", "slug", "corpus", "mode", "items_per_participant", "target_responses",
                    "order", "seed", "consent_text", "instructions", "checks", "check_threshold",
                    "completion_code", "redirect_url")
    }
    for key in ("show_feedback", "ask_probability", "allow_skip", "pilot"):
        spec[key] = form.get(key) == "on"
    spec = {k: v for k, v in spec.items() if v != ""}
    if form.get("items_choice") == "sample":
        raw = form.get("sample_size", "").strip()
        if not re.fullmatch(r"\d{1,6}", raw):
            errors["items"] = "give the number of positions to sample (a whole number)"
        else:
            spec["items"] = {"sample": int(raw)}
    else:
        spec["items"] = "all"
    return spec, errors


def _form_errors(errors: dict[str, str]) -> dict[str, str]:
    """StudyError fields as form fields: checks[2] -> checks ("line 3: ...")."""
    out: dict[str, str] = {}
    for key, message in errors.items():
        match = re.fullmatch(r"(\w+)\[(\d+)\]", key)
        if match:
            key, message = match.group(1), f"line {int(match.group(2)) + 1}: {message}"
        out.setdefault(key, message)
    return out


@bp.route("/research/studies/new", methods=["GET", "POST"])
@auth.login_required
def new_study():
    values: dict = {
        "mode": "token", "order": "random", "items_per_participant": "20",
        "target_responses": "10", "consent_text": DEFAULT_CONSENT,
        "instructions": "", "items_choice": "all", "allow_skip": True, "pilot": True,
    }
    errors: dict[str, str] = {}
    if request.method == "POST":
        spec, errors = _form_to_spec(request.form)
        values = {**request.form.to_dict(), **{k: spec.get(k, False) for k in
                                               ("show_feedback", "ask_probability", "allow_skip", "pilot")}}
        if not errors:
            model = active_model(db.session, current_app.config["MODEL"])
            try:
                with db.write_lock():
                    study = create_study(db.session, spec, model=model, tokenizer=_tokenizer(),
                                                 created_by=g.researcher.id)
                    db.session.commit()
            except StudyError as exc:
                db.session.rollback()
                errors = _form_errors(exc.errors)
            else:
                flash(f"Study “{study.name}” created. Pilot mode is "
                      f"{'on' if study.pilot else 'off'}.", "ok")
                return redirect(url_for("research.study_detail", study_id=study.id))
    return render_template("research/study_new.html", values=values, errors=errors,
                           corpora=_corpus_choices(), default_instructions=DEFAULT_INSTRUCTIONS,
                           fields=FIELDS), (400 if errors else 200)


# ------------------------------------------------------------------------ passages (corpora)


def _corpus_rows() -> list[dict]:
    """Every playable corpus with its documents, how far the configured model has scored it,
    and the state of its scoring job (uploads from this page)."""
    queue = jobs.jobs_for(current_app)
    rows = []
    for corpus in db.session.scalars(
        select(Corpus).where(Corpus.purpose == CorpusPurpose.GAME).order_by(Corpus.name)
    ):
        rows.append(_corpus_state(corpus, queue))
    return rows


def _corpus_state(corpus: Corpus, queue) -> dict:
    progress = jobs.corpus_progress(db.session, current_app.config, corpus)
    try:
        status = queue.corpus_status(corpus.id)
    except Exception:  # noqa: BLE001 (queue storage down: the database still tells progress)
        status = {}
    state = status.get("state")
    if state in (None, "done"):  # "not scored" when passages were added since (command line)
        state = "scored" if progress["scored_documents"] == progress["documents"] else "not scored"
    return {"id": corpus.id, "name": corpus.name, **progress, "state": state,
            "error": status.get("error"), "active": state in jobs.ACTIVE_STATES}


def _corpora_page(errors: list[str] | None = None, values: dict | None = None,
                  status: int = 200, uploaded: dict | None = None):
    return render_template(
        "research/corpora.html", corpora=_corpus_rows(), errors=errors or [],
        values=values or {"text_field": "text", "split": "file"},
        max_bytes=current_app.config["MAX_IMPORT_BYTES"], uploaded=uploaded,
        messages=get_flashed_messages(with_categories=True),
    ), status


@bp.get("/research/corpora")
@auth.login_required
def corpora():
    """Passages: every corpus with its scoring progress, and the upload form."""
    return _corpora_page()


@bp.post("/research/corpora")
@auth.login_required
def upload_corpus():
    """Import an uploaded .txt/.jsonl/.csv file into a corpus (all or nothing, as `humanlm corpus
    import`), then queue its scoring; the page shows the errors (with line numbers) or the
    progress. Corpora are shared by every researcher, as on the command line."""
    form = request.form
    values = {key: form.get(key, "")[:200] for key in ("corpus", "text_field", "split", "min_prefix_tokens")}
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _corpora_page(["Choose a .txt, .jsonl or .csv file to upload."], values, 400)
    raw_min = values["min_prefix_tokens"].strip()
    if raw_min and not (raw_min.isdigit() and 0 <= int(raw_min) <= 100):
        return _corpora_page(["Skip the first N positions: give a whole number from 0 to 100."],
                             values, 400)
    cfg = current_app.config
    try:
        with db.write_lock():
            # On a native thread under the gevent server: the rooms keep going meanwhile.
            done = in_native_thread(
                uploads.import_and_commit, db.new_session, stream=upload.stream,
                filename=upload.filename, corpus_name=values["corpus"],
                text_field=values["text_field"], split=values["split"] or "file",
                tokenizer=_tokenizer(), max_bytes=cfg["MAX_IMPORT_BYTES"],
                max_tokens=cfg["MAX_DOCUMENT_TOKENS"],
                min_prefix_tokens=int(raw_min) if raw_min else cfg["MIN_PREFIX_TOKENS"],
            )
    except uploads.UploadRefused as refused:
        return _corpora_page(refused.errors, values, 400)
    report, corpus = done.report, done.corpus
    if report.added:
        try:
            jobs.jobs_for(current_app).request_scoring(corpus.id)
        except Exception:
            current_app.logger.warning("could not queue scoring of %s", corpus.name, exc_info=True)
            flash("The passages are stored but their scoring could not be queued: run "
                  f"`humanlm score --corpus {corpus.name}` on the server.", "error")
    parts = [(f"{report.added} passage{'' if report.added == 1 else 's'} added to "
              f"{'the new corpus' if done.new_corpus else 'corpus'} “{corpus.name}” "
              f"({report.items:,} token positions, {report.playable:,} playable)")]
    if report.duplicates:
        parts.append(f"{report.duplicates} already imported, skipped")
    if report.cut:
        parts.append(f"{report.cut} long text{'' if report.cut == 1 else 's'} cut at sentence boundaries")
    flash("; ".join(parts) + "." + (" Scoring them with the model now." if report.added else ""), "ok")
    return redirect(url_for("research.corpora", corpus=corpus.id) + f"#corpus-{corpus.id}")


@bp.errorhandler(413)
def upload_too_large(exc):
    limit = current_app.config["MAX_IMPORT_BYTES"]
    message = (f"The file is larger than {limit:,} bytes (HUMANLM_MAX_IMPORT_BYTES): split it "
               "into parts and upload them one after another into the same corpus.")
    researcher = auth.current_researcher(db.session) if request.endpoint == "research.upload_corpus" else None
    if researcher is None:  # not the upload page (or logged out): the app's usual reply
        if request.path.startswith("/api/"):
            return jsonify(error=exc.description or exc.name), 413
        return exc
    g.researcher = researcher
    return _corpora_page([message], None, 413)


@bp.get("/api/research/corpora/progress")
@auth.login_required
def corpus_progress():
    """A corpus's scoring progress (polled by the passages page while it is scored)."""
    raw = request.args.get("corpus", "")
    corpus = db.session.get(Corpus, int(raw)) if raw.isdigit() and int(raw) < 2**31 else None
    if corpus is None or corpus.purpose != CorpusPurpose.GAME:
        return jsonify(error=f"there is no corpus {raw}"), 404
    return jsonify(_corpus_state(corpus, jobs.jobs_for(current_app)))


def _participant_rows(study: Study) -> list[dict]:
    participants = list(db.session.scalars(
        select(Participant).where(Participant.study_id == study.id)
        .order_by(Participant.started_at.desc(), Participant.id.desc()).limit(PARTICIPANT_ROWS)
    ))
    answered = dict(db.session.execute(
        select(Guess.player_id, func.count(Guess.id))
        .where(Guess.study_id == study.id, Guess.player_id.in_([p.player_id for p in participants]))
        .group_by(Guess.player_id)
    ).all())
    return [{"p": p, "answered": answered.get(p.player_id, 0), "assigned": len(p.assigned or [])}
            for p in participants]


@bp.get("/research/studies/<int:study_id>")
@auth.login_required
def study_detail(study_id: int):
    study = _study_or_404(study_id)
    corpus = db.session.get(Corpus, study.corpus_id) if study.corpus_id else None
    return render_template(
        "research/study_detail.html", study=study, corpus=corpus,
        summary=_summary(study), link=_study_link(study),
        items=item_fill_rows(db.session, study), participants=_participant_rows(study),
        histogram=fill_histogram(db.session, study), formats=EXPORT_FORMATS,
        n_checks=sum(si.kind == "check" for si in study.items), stalled_minutes=STALLED_MINUTES,
        messages=get_flashed_messages(with_categories=True),
    )


@bp.post("/research/studies/<int:study_id>/settings")
@auth.login_required
def study_settings(study_id: int):
    study = _study_or_404(study_id)
    action = request.form.get("action")
    if action == "pilot-on":
        set_pilot(study, True)
        flash("Pilot mode is on: new participants are flagged pilot and do not count.", "ok")
    elif action == "pilot-off":
        set_pilot(study, False)
        flash("Pilot mode is off: new participants count towards the targets.", "ok")
    elif action == "share":
        try:
            other = auth.share_study(db.session, study, request.form.get("email", "")[:254])
        except auth.ResearcherError as exc:
            db.session.rollback()
            flash(f"Not shared: {exc}.", "error")
            return redirect(url_for("research.study_detail", study_id=study.id))
        flash(f"{other.email} can now see and change this study.", "ok")
    elif action in ("open", "close"):
        study.status = "open" if action == "open" else "closed"
        flash("The study is open to new participants." if action == "open" else
              "The study is closed: new participants see a 'closed' page; those who started can finish.", "ok")
    else:
        abort(400, description="unknown action")
    db.session.commit()
    return redirect(url_for("research.study_detail", study_id=study.id))


@bp.get("/api/research/studies/<int:study_id>/summary")
@auth.login_required
def study_summary_api(study_id: int):
    study = _study_or_404(study_id)  # JSON for /api/ paths (not_found below)
    return jsonify(_summary(study))


@bp.get("/research/studies/<int:study_id>/export")
@auth.login_required
def export_study(study_id: int):
    """A zip of the study's data (guesses, items, participants, ...) streamed as it is written."""
    study = db.session.get(Study, study_id)
    if study is None or not auth.may_access(db.session, g.researcher, study):
        return jsonify(error=f"there is no study {study_id}"), 404
    fmt = request.args.get("format", "csv")
    if fmt not in EXPORT_FORMATS:
        return jsonify(error=f"format must be one of {', '.join(EXPORT_FORMATS)}"), 400
    include_pilot = request.args.get("include_pilot", "0")
    if include_pilot not in ("0", "1"):
        return jsonify(error="include_pilot must be 0 or 1"), 400
    try:
        from ..export import ExportFilters, stream_zip
    except ImportError:
        return jsonify(error="export is not available in this installation"), 501
    filters = ExportFilters(study_id=study.id, include_pilot=include_pilot == "1")
    # stream_zip checks the options at once (a clean 4xx) and then makes the zip while it is
    # sent: the first block leaves after about 1 MB of it, not after the whole export.
    try:
        chunks = iter(stream_zip(db.session, fmt, filters))
        first = next(chunks, b"")
    except (ValueError, ImportError) as exc:
        db.session.rollback()
        return jsonify(error=str(exc)), 400
    stamp = _now().strftime("%Y%m%d-%H%M%S")
    pilot = "-with-pilot" if include_pilot == "1" else ""
    return Response(
        stream_with_context(chain([first], chunks)), mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="humanlm-{study.slug}-{fmt}{pilot}-{stamp}.zip"',
                 "Cache-Control": "no-store"},
    )


@bp.get("/research/studies/<int:study_id>/report")
@auth.login_required
def study_report(study_id: int):
    """The analysis report of a study's data (the same numbers as `humanlm analyze`).

    The study is exported to a temporary folder and analysed there; the HTML is self-contained.
    """
    import shutil
    import tempfile
    from pathlib import Path

    study = _study_or_404(study_id)
    if request.args.get("include_pilot", "0") not in ("0", "1"):
        abort(400, description="include_pilot must be 0 or 1")
    include_pilot = request.args.get("include_pilot", "0") == "1"
    from analysis.reader import AnalysisError
    from analysis.report import write_report

    from ..export import ExportFilters, write_export

    folder = Path(tempfile.mkdtemp(prefix="humanlm-report-"))
    try:
        fmt = "parquet" if _has_pyarrow() else "csv"
        filters = ExportFilters(study_id=study.id, include_pilot=include_pilot)
        write_export(db.session, folder / "export", fmt, filters)
        try:
            # The analysis (files in, HTML out, seconds of NumPy on a large study) runs on a
            # native thread in the gevent server, so rooms on the same server keep answering.
            path = in_native_thread(write_report, folder / "export", folder / "report.html", "html",
                                    include_pilot=include_pilot, n_boot=400)
        except AnalysisError as exc:
            return render_template(
                "research/message.html", title="No analysis yet",
                message=f"The analysis needs more data: {exc}",
                back=url_for("research.study_detail", study_id=study.id),
            ), 409
        return Response(path.read_text(encoding="utf-8"), mimetype="text/html")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------- participant pages


def _study_by_slug(slug: str) -> Study:
    study = db.session.scalar(select(Study).where(Study.slug == slug.lower()))
    if study is None:
        abort(404, description="there is no study at this address")
    return study


def _session_participant(study: Study) -> Participant | None:
    participant_id = (session.get(PARTICIPANTS_KEY) or {}).get(study.slug)
    if participant_id is None:
        return None
    participant = db.session.get(Participant, participant_id)
    return participant if participant is not None and participant.study_id == study.id else None


def _remember(study: Study, participant: Participant) -> None:
    known = dict(session.get(PARTICIPANTS_KEY) or {})
    known[study.slug] = participant.id
    session[PARTICIPANTS_KEY] = known
    session.permanent = True


def _message(title: str, message: str, status: int, *, study: Study | None = None, code: str = ""):
    return render_template("research/participant/message.html", title=title, message=message,
                           study=study, code=code), status


def _already_done(study: Study):
    return _message(
        "You have already completed this study",
        "Thank you: your answers are saved. Each person can take part once, so there is nothing "
        "more to do here.", 409, study=study, code=study.completion_code,
    )


@bp.get("/s/<slug>")
def study_entry(slug: str):
    """The study link. It continues a run only in the browser that consented to it, or with the
    same platform SESSION_ID; anyone else with the same platform id gets the consent page."""
    study = _study_by_slug(slug)
    params = captured_params(request.args)
    external_id = external_id_of(params)
    mine = _session_participant(study)
    if mine is not None and external_id not in (None, mine.external_id):
        mine = None  # another platform id in this browser: another person
    run = mine or resumable_run(db.session, study, params)
    if run is not None:
        if run.finished_at is not None:
            return _already_done(study)
        _remember(study, run)
        return redirect(url_for("research.study_task", slug=study.slug))
    if study.status != "open":
        return _message("This study is closed", "It is not taking new participants at the moment. "
                        "Thank you for your interest.", 403, study=study)
    return render_template("research/participant/consent.html", study=study, params=params)


@bp.post("/s/<slug>/consent")
def study_consent(slug: str):
    study = _study_by_slug(slug)
    params = captured_params(request.form)
    external_id = external_id_of(params)
    mine = _session_participant(study)
    if mine is not None and external_id in (None, mine.external_id):
        return redirect(url_for("research.study_task", slug=study.slug))  # consented already
    try:
        with db.write_lock():
            participant = resumable_run(db.session, study, params) or start_participant(
                db.session, study, params, now=_now(),
                reservation_minutes=current_app.config["STUDY_RESERVATION_MINUTES"],
            )
            db.session.commit()
    except EntryRefused as exc:
        db.session.rollback()
        return _message("This study is closed", str(exc).capitalize() + ".", exc.status, study=study)
    if participant.finished_at is not None:
        return _already_done(study)
    _remember(study, participant)
    return redirect(url_for("research.study_instructions", slug=study.slug))


@bp.get("/s/<slug>/declined")
def study_declined(slug: str):
    study = _study_by_slug(slug)
    return _message("You have not joined the study",
                    "Nothing about you was stored. You can close this page now; if you came from a "
                    "recruitment site, return there and withdraw from the study.", 200, study=study)


def _participant_at(slug: str, *, finished: bool):
    """(study, participant, None) when this browser's run belongs on a page for runs that are
    `finished` (the done page) or not (instructions, task); else (study, None, a redirect to where
    it belongs): no consent yet to the entry page, a run at the other stage to the task or done page.
    """
    study = _study_by_slug(slug)
    participant = _session_participant(study)
    if participant is None:
        return study, None, redirect(url_for("research.study_entry", slug=study.slug))
    if (participant.finished_at is not None) != finished:
        page = "research.study_task" if finished else "research.study_done"
        return study, None, redirect(url_for(page, slug=study.slug))
    return study, participant, None


@bp.get("/s/<slug>/instructions")
def study_instructions(slug: str):
    study, participant, elsewhere = _participant_at(slug, finished=False)
    if elsewhere is not None:
        return elsewhere
    return render_template("research/participant/instructions.html", study=study,
                           n_items=len(participant.assigned or []))


@bp.get("/s/<slug>/task")
def study_task(slug: str):
    study, _participant, elsewhere = _participant_at(slug, finished=False)
    if elsewhere is not None:
        return elsewhere
    return render_template("research/participant/task.html", study=study,
                           allow_skip=allow_skip(study))


@bp.get("/s/<slug>/done")
def study_done(slug: str):
    study, participant, elsewhere = _participant_at(slug, finished=True)
    if elsewhere is not None:
        return elsewhere
    return render_template("research/participant/done.html", study=study,
                           redirect_to=redirect_target(study, participant))


# --------------------------------------------------------------------------- participant API


def _api_participant(slug: str) -> tuple[Study, Participant]:
    study = _study_by_slug(slug)
    participant = _session_participant(study)
    if participant is None:
        abort(403, description="open the study link and give your consent first")
    return study, participant


def _pair_secret() -> bytes:
    return str(current_app.config["SECRET_KEY"]).encode()


def _state(study: Study, participant: Participant) -> dict:
    sequence, done, current = progress(db.session, study, participant)
    state = {"answered": done, "total": len(sequence), "finished": participant.finished_at is not None}
    if current is not None and participant.finished_at is None:
        pair = None
        if question_mode(study, current) == "pairwise":
            found = study_pair(db.session, study, participant, current.item, _pair_secret())
            pair = pair_payload(found, current.item, _tokenizer()) if found else None
        state["question"] = study_question_payload(study, current, done + 1, len(sequence), pair)
    else:
        state["done_url"] = url_for("research.study_done", slug=study.slug)
    return state


@bp.get("/api/s/<slug>/current")
def study_current(slug: str):
    """The participant's progress and current item (its prefix only)."""
    study, participant = _api_participant(slug)
    if participant.finished_at is not None:
        return jsonify(error="you have already completed this study",
                       done_url=url_for("research.study_done", slug=study.slug)), 409
    return jsonify(_state(study, participant))


@bp.post("/api/s/<slug>/answers")
@accepts(body=StudyAnswerIn)
def study_answer(slug: str):
    """Store the participant's answer to their current item (and give feedback if the study does)."""
    received_at = _now()
    study, participant = _api_participant(slug)
    answer = parse_body(StudyAnswerIn)
    try:
        result = submit_answer(
            db.session, study, participant, _tokenizer(), answer, received_at=received_at,
            write_lock=db.write_lock, secret=_pair_secret(),
        )
    except AnswerRefused as refused:
        db.session.rollback()
        return jsonify(error=refused.message), refused.status
    if not result.replayed:
        jobs.ask_for_model_numbers(current_app._get_current_object(), result.guess)
    reply = _state(study, participant)
    reply.update(feedback=result.feedback, replayed=result.replayed, stored=True)
    return jsonify(reply)


@bp.errorhandler(404)
@bp.errorhandler(403)
def not_found(exc):
    if request.path.startswith("/api/"):
        return jsonify(error=exc.description or exc.name), exc.code
    title = "This page does not exist" if exc.code == 404 else "Not allowed"
    return render_template("research/participant/message.html", title=title,
                           message=(exc.description or exc.name).capitalize() + ".", study=None,
                           code=""), exc.code
