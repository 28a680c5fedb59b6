"""`humanlm researcher ...` and `humanlm study ...`: accounts and studies from the command line.

A study file is YAML or JSON with the same settings as the dashboard's set-up form (see
docs/studies.md and `webapp.research.setup.FIELDS`). Errors name the field and nothing is
stored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import func, select

from ..extensions import db


def _fail(message: str) -> None:
    click.secho(f"Error: {message}", fg="red", err=True)
    sys.exit(1)


@click.group("researcher", help="Researcher accounts (they log in at /research/login).")
def researcher_group() -> None:
    pass


@researcher_group.command("add", help="Add a researcher; the password is asked twice, hidden.")
@click.argument("email")
@with_appcontext
def researcher_add(email: str) -> None:
    from ..models import Researcher
    from .auth import MIN_PASSWORD_CHARS, ResearcherError, create_researcher, normalize_email

    if db.session.scalar(select(Researcher.id).where(Researcher.email == normalize_email(email))):
        _fail(f"a researcher with e-mail {normalize_email(email)} already exists")
    password = click.prompt(f"Password (at least {MIN_PASSWORD_CHARS} characters)", hide_input=True,
                            confirmation_prompt="Repeat the password", err=True)
    try:
        researcher = create_researcher(db.session, email, password)
        db.session.commit()
    except ResearcherError as exc:
        db.session.rollback()
        _fail(str(exc))
    click.echo(f"Added researcher {researcher.email}. Log in at /research/login.")


@researcher_group.command("list", help="List researcher accounts.")
@with_appcontext
def researcher_list() -> None:
    from ..models import Researcher

    rows = list(db.session.scalars(select(Researcher).order_by(Researcher.email)))
    if not rows:
        click.echo("No researchers yet. Add one with `humanlm researcher add EMAIL`.")
    for r in rows:
        last = r.last_login_at.strftime("%Y-%m-%d %H:%M") if r.last_login_at else "never"
        click.echo(f"{r.email}  (added {r.created_at:%Y-%m-%d}, last login {last})")


@click.group("study", help="Create and list online studies.")
def study_group() -> None:
    pass


class StudyFileError(ValueError):
    """A study file that cannot be read as one mapping of settings."""


def read_study_file(path: Path) -> dict:
    """A study spec from a .yaml/.yml/.json file (anything else is read as YAML)."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyFileError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise StudyFileError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise StudyFileError(f"{path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise StudyFileError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise StudyFileError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise StudyFileError(f"{path}: the file must hold one mapping of settings (name: ..., corpus: ...)")
    return data


@study_group.command("create", help="Create a study from a YAML or JSON FILE.")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--owner", default=None, metavar="EMAIL",
              help="The researcher who owns it (others see it only if shared). "
                   "Without it the study is shared with every researcher.")
@with_appcontext
def study_create(file: Path, owner: str | None) -> None:
    from ..game import active_model
    from ..lm import ModelSpecError, load_tokenizer
    from .setup import StudyError, create_study

    try:
        spec = read_study_file(file)
    except StudyFileError as exc:
        _fail(str(exc))
    try:
        tokenizer = load_tokenizer(current_app.config["MODEL"])
    except ModelSpecError as exc:
        _fail(str(exc))
    model = active_model(db.session, current_app.config["MODEL"])
    owner_id = None
    if owner is not None:
        from ..models import Researcher
        from .auth import normalize_email

        owner_id = db.session.scalar(
            select(Researcher.id).where(Researcher.email == normalize_email(owner))
        )
        if owner_id is None:
            _fail(f"there is no researcher {owner} (add one with `humanlm researcher add`)")
    try:
        study = create_study(db.session, spec, model=model, tokenizer=tokenizer, created_by=owner_id)
        db.session.commit()
    except StudyError as exc:
        db.session.rollback()
        _fail("the study was not created:\n" + "\n".join(f"  {k}: {v}" for k, v in exc.errors.items()))
    except BaseException:
        db.session.rollback()
        raise
    n_tests = sum(si.kind == "test" for si in study.items)
    n_checks = len(study.items) - n_tests
    click.echo(
        f"Created study {study.id} '{study.name}': {n_tests} test items, {n_checks} checks, "
        f"{study.items_per_participant} items per participant, target {study.target_responses} "
        f"responses per item. Link: /s/{study.slug}"
    )
    if study.pilot:
        click.echo("Pilot mode is ON: participants are flagged pilot. Switch it off in the "
                   "dashboard (or set `pilot: false`) before recruiting.")


@study_group.command("share", help="Let the researcher with EMAIL see and change study SLUG.")
@click.argument("slug")
@click.argument("email")
@with_appcontext
def study_share(slug: str, email: str) -> None:
    from ..models import Study
    from .auth import ResearcherError, share_study

    study = db.session.scalar(select(Study).where(Study.slug == slug.lower()))
    if study is None:
        _fail(f"there is no study {slug} (see `humanlm study list`)")
    try:
        other = share_study(db.session, study, email)
    except ResearcherError as exc:
        _fail(str(exc))
    db.session.commit()
    click.echo(f"{other.email} can now see and change study {study.slug}.")


@study_group.command("list", help="List studies with participant and response counts.")
@with_appcontext
def study_list() -> None:
    from ..models import Participant, Study
    from .dashboard import study_summary

    studies = list(db.session.scalars(select(Study).order_by(Study.id)))
    if not studies:
        click.echo("No studies yet. Create one with `humanlm study create FILE`.")
    for study in studies:
        s = study_summary(db.session, study)
        pilots = db.session.scalar(
            select(func.count(Participant.id)).where(Participant.study_id == study.id, Participant.pilot)
        )
        flags = [study.status] + (["pilot mode"] if study.pilot else [])
        click.echo(
            f"{study.id}  /s/{study.slug}  '{study.name}' ({', '.join(flags)}): "
            f"{s['participants']['started']} started, {s['participants']['finished']} finished, "
            f"{s['participants']['excluded']} excluded, {pilots} pilot; "
            f"{s['responses']['items_at_target']}/{s['responses']['items']} items at target "
            f"{study.target_responses}"
        )


COMMANDS = (researcher_group, study_group)


def register(app_or_group) -> None:
    """Add the commands to a Flask app's CLI (or to a click group)."""
    group = getattr(app_or_group, "cli", app_or_group)
    for command in COMMANDS:
        group.add_command(command)
