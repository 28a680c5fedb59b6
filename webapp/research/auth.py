"""Researcher accounts: argon2 password hashes, logins kept on the server, `login_required`.

A login is a row of `researcher_sessions`; the signed cookie holds only a random token for it.
Why on the server: logging out must end the login for every copy of the cookie (one captured
before logout opens nothing), and the expiry (`RESEARCH_SESSION_MINUTES`) is counted from the
login's stored time, not from anything the browser sends. The same cookie also carries the
game's pseudonymous player id, which lives for weeks; a researcher's login does not.

Password hashing costs 64 MiB of memory per attempt (argon2's default), so at most
`HASH_SLOTS` run at once: parallel login attempts queue instead of driving the server's memory
up, and the login throttle (Flask-Limiter, per client address and per e-mail) bounds the queue.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from urllib.parse import urlparse

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, g, jsonify, redirect, request, session, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Researcher, ResearcherSession, Study, StudyAccess, utcnow

HASHER = PasswordHasher()
MIN_PASSWORD_CHARS = 10
SESSION_TOKEN = "researcher_session"
HASH_SLOTS = 2  # password hashes computed at once (64 MiB each)
HASH_WAIT_SECONDS = 20
_hash_slots = threading.BoundedSemaphore(HASH_SLOTS)
# Verified against when the e-mail is unknown, so a wrong address takes as long as a wrong password.
_DUMMY_HASH = HASHER.hash("not a real password, only for timing")


class ResearcherError(ValueError):
    """An account that cannot be created (bad e-mail, short password, duplicate)."""


class LoginBusy(RuntimeError):
    """Too many password checks are running; the caller should ask the person to retry."""


def _verify(password_hash: str, password: str) -> None:
    """argon2 verification, at most HASH_SLOTS at a time (raises LoginBusy after waiting)."""
    if not _hash_slots.acquire(timeout=HASH_WAIT_SECONDS):
        raise LoginBusy("the server is busy checking passwords; try again in a minute")
    try:
        HASHER.verify(password_hash, password)
    finally:
        _hash_slots.release()


def normalize_email(email: str) -> str:
    return email.strip().lower()


def create_researcher(session: Session, email: str, password: str) -> Researcher:
    """Add a researcher with a hashed password (flushed, not committed)."""
    email = normalize_email(email)
    local, _, domain = email.partition("@")
    if not local or "." not in domain or len(email) > 254 or any(ch.isspace() for ch in email):
        raise ResearcherError(f"'{email}' is not an e-mail address")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ResearcherError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    if session.scalar(select(Researcher.id).where(Researcher.email == email)) is not None:
        raise ResearcherError(f"a researcher with e-mail {email} already exists")
    researcher = Researcher(email=email, password_hash=HASHER.hash(password))
    session.add(researcher)
    session.flush()
    return researcher


def authenticate(session: Session, email: str, password: str) -> Researcher | None:
    """The researcher if the password is right (rehashing an outdated hash), else None."""
    researcher = session.scalar(select(Researcher).where(Researcher.email == normalize_email(email)))
    try:
        _verify(researcher.password_hash if researcher else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if researcher is None:
        return None
    if HASHER.check_needs_rehash(researcher.password_hash):
        researcher.password_hash = HASHER.hash(password)
    researcher.last_login_at = utcnow()
    return researcher


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def login(db_session: Session, researcher: Researcher) -> None:
    """Start a server-side login and put its token in the cookie (flushed; the caller commits)."""
    token = secrets.token_urlsafe(32)
    db_session.add(ResearcherSession(researcher_id=researcher.id, token_hash=_token_hash(token)))
    db_session.flush()
    session[SESSION_TOKEN] = token


def _stored_login(db_session: Session) -> ResearcherSession | None:
    token = session.get(SESSION_TOKEN)
    if not isinstance(token, str) or not token:
        return None
    return db_session.scalar(
        select(ResearcherSession).where(ResearcherSession.token_hash == _token_hash(token))
    )


def logout(db_session: Session) -> None:
    """End this login on the server (every copy of the cookie stops working) and forget it."""
    stored = _stored_login(db_session)
    if stored is not None and stored.ended_at is None:
        stored.ended_at = utcnow()
        db_session.commit()
    session.pop(SESSION_TOKEN, None)


def current_researcher(db_session: Session) -> Researcher | None:
    """The logged-in researcher, or None (ended, unknown or older than the lifetime)."""
    stored = _stored_login(db_session)
    if stored is None or stored.ended_at is not None:
        return None
    lifetime = timedelta(minutes=current_app.config["RESEARCH_SESSION_MINUTES"])
    if utcnow() - stored.created_at > lifetime:
        stored.ended_at = utcnow()
        db_session.commit()
        session.pop(SESSION_TOKEN, None)
        g.research_session_expired = True
        return None
    return db_session.get(Researcher, stored.researcher_id)


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.endpoint in JSON_ENDPOINTS


# Endpoints that are downloads or data: a logged-out request gets 401 JSON, not a login page.
JSON_ENDPOINTS = {"research.export_study"}


def safe_next(target: str | None) -> str | None:
    """Only local paths are followed after login (no open redirect)."""
    if not target:
        return None
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def login_required(view: Callable) -> Callable:
    """401 JSON for the API and export routes, a redirect to the login page for pages."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        from ..extensions import db

        researcher = current_researcher(db.session)
        if researcher is None:
            expired = bool(g.get("research_session_expired"))
            if _wants_json():
                message = "your session expired: log in again" if expired else "log in as a researcher first"
                return jsonify(error=message), 401
            return redirect(url_for("research.login", next=request.full_path.rstrip("?"),
                                    expired=1 if expired else None))
        g.researcher = researcher
        return view(*args, **kwargs)

    return wrapped


def visible_studies(researcher: Researcher):
    """The studies a researcher may see and change: their own, those shared with them, and those
    created from the command line without an owner (shared with every researcher)."""
    shared = select(StudyAccess.study_id).where(StudyAccess.researcher_id == researcher.id)
    return select(Study).where(
        (Study.created_by == researcher.id) | Study.created_by.is_(None) | Study.id.in_(shared)
    )


def may_access(db_session: Session, researcher: Researcher, study: Study) -> bool:
    if study.created_by is None or study.created_by == researcher.id:
        return True
    return db_session.scalar(
        select(StudyAccess.id).where(
            StudyAccess.study_id == study.id, StudyAccess.researcher_id == researcher.id
        )
    ) is not None


def share_study(db_session: Session, study: Study, email: str) -> Researcher:
    """Give the researcher with this e-mail access to the study (flushed, not committed)."""
    other = db_session.scalar(select(Researcher).where(Researcher.email == normalize_email(email)))
    if other is None:
        raise ResearcherError(f"there is no researcher {normalize_email(email)}")
    if not may_access(db_session, other, study):
        db_session.add(StudyAccess(study_id=study.id, researcher_id=other.id))
        db_session.flush()
    return other
