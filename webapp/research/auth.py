"""Researcher accounts: argon2 password hashes, login sessions that expire, `login_required`.

Why the expiry is checked on the server rather than with PERMANENT_SESSION_LIFETIME: the same
signed cookie carries the game's pseudonymous player id, which should live for weeks, while a
researcher's login (which opens every participant's data) should not. The login time is stored
in the session and a request after `RESEARCH_SESSION_MINUTES` is treated as logged out, however
old or new the cookie is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from urllib.parse import urlparse

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, g, jsonify, redirect, request, session, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Researcher, utcnow

HASHER = PasswordHasher()
MIN_PASSWORD_CHARS = 10
SESSION_ID = "researcher_id"
SESSION_AT = "researcher_auth_at"
# Verified against when the e-mail is unknown, so a wrong address takes as long as a wrong password.
_DUMMY_HASH = HASHER.hash("not a real password, only for timing")


class ResearcherError(ValueError):
    """An account that cannot be created (bad e-mail, short password, duplicate)."""


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
        HASHER.verify(researcher.password_hash if researcher else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if researcher is None:
        return None
    if HASHER.check_needs_rehash(researcher.password_hash):
        researcher.password_hash = HASHER.hash(password)
    researcher.last_login_at = utcnow()
    return researcher


def login(researcher: Researcher) -> None:
    session[SESSION_ID] = researcher.id
    session[SESSION_AT] = time.time()


def logout() -> None:
    session.pop(SESSION_ID, None)
    session.pop(SESSION_AT, None)


def current_researcher(db_session: Session) -> Researcher | None:
    """The logged-in researcher, or None (also when the login is older than the lifetime)."""
    researcher_id, at = session.get(SESSION_ID), session.get(SESSION_AT)
    if researcher_id is None or not isinstance(at, (int, float)):
        return None
    lifetime = current_app.config["RESEARCH_SESSION_MINUTES"] * 60
    if time.time() - at > lifetime:
        logout()
        g.research_session_expired = True
        return None
    return db_session.get(Researcher, researcher_id)


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
