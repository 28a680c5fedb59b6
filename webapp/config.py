"""Every setting humanlm reads, in one table.

Each setting has an environment variable, a default that works on a laptop (SQLite file,
in-process Socket.IO, the embedded Gemma model) and a one-line description. README.md's
settings table is checked against this table by a test, so a new setting cannot go undocumented.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
# The git checkout this package runs from (`make`, `pip install -e .`), or None for an installed
# wheel, which carries templates/, static/ and migrations/ under webapp/_assets/ instead.
SOURCE_ROOT: Path | None = (
    PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else None
)
# Default SQLite file and secret key: the checkout's instance/, else instance/ in the directory
# an installed copy runs in (DATABASE_URL and HUMANLM_SECRET_KEY replace both).
INSTANCE_DIR = (SOURCE_ROOT or Path.cwd()) / "instance"


def asset_dir(name: str) -> Path:
    """The top-level folder `name` (templates, static, migrations): the source tree's copy
    first, else the one the wheel installs under webapp/_assets/ (see pyproject.toml)."""
    if SOURCE_ROOT is not None and (SOURCE_ROOT / name).is_dir():
        return SOURCE_ROOT / name
    installed = PACKAGE_DIR / "_assets" / name
    if installed.is_dir():
        return installed
    raise FileNotFoundError(f"humanlm's {name}/ folder is missing (looked in {installed})")


DEFAULT_MODEL = "llamacpp:gemma-3-270m"  # the embedded base model (written once, here)


@dataclass(frozen=True)
class Setting:
    key: str  # key in app.config
    env: str  # environment variable that overrides the default
    default: Any
    parse: Callable[[str], Any]
    doc: str


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATABASE_URL", "DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'humanlm.db'}", str,
        "SQLAlchemy database URL. Default: a SQLite file in instance/. "
        "Use postgresql+psycopg://... for several workers.",
    ),
    Setting(
        "SECRET_KEY", "HUMANLM_SECRET_KEY", None, str,
        "Signs session cookies. Default: a random key kept in instance/secret_key.",
    ),
    Setting(
        "MODEL", "HUMANLM_MODEL", DEFAULT_MODEL, str,
        "Language model spec: llamacpp:gemma-3-270m (embedded base model), llamacpp:/path/model.gguf, "
        "ngram:/path/model.ngram or openai:http://host:port/v1#model[;encoding=cl100k_base].",
    ),
    Setting(
        "OPENAI_API_KEY", "HUMANLM_OPENAI_API_KEY", None, str,
        "API key for openai: model servers (sent as a Bearer token; never stored or exported).",
    ),
    Setting(
        "OPENAI_CONCURRENCY", "HUMANLM_OPENAI_CONCURRENCY", 4, int,
        "Requests in flight at once to an openai: model server (bounded; 1 = one at a time).",
    ),
    Setting(
        "OPENAI_RETRIES", "HUMANLM_OPENAI_RETRIES", 6, int,
        "Attempts per request to an openai: server on HTTP 429/5xx or a dropped connection, "
        "with exponential backoff (0.5 s doubling, at most 8 s between attempts).",
    ),
    Setting(
        "COMPARE_MODELS", "HUMANLM_COMPARE_MODELS", "", str,
        "Further model specs, comma-separated, whose log-probability of every answer and item "
        "(under each model's own tokens) the background jobs also fill, one model loaded at a "
        "time, after HUMANLM_MODEL; empty = only HUMANLM_MODEL.",
    ),
    Setting(
        "TOP_K", "HUMANLM_TOP_K", 64, int,
        "How many of the model's most likely next tokens are stored per position.",
    ),
    Setting(
        "MAX_DOCUMENT_TOKENS", "HUMANLM_MAX_DOCUMENT_TOKENS", 512, int,
        "Longest document in model tokens; longer texts are cut at sentence boundaries on import. "
        "Scoring memory is about this x 262,144 x 4 bytes.",
    ),
    Setting(
        "N_THREADS", "HUMANLM_N_THREADS", 0, int,
        "CPU threads for the model; 0 means all cores.",
    ),
    Setting(
        "MIN_PREFIX_TOKENS", "HUMANLM_MIN_PREFIX_TOKENS", 3, int,
        "Default playability rule for new corpora: the first N token positions of a document "
        "are not played (too little context).",
    ),
    Setting(
        "MAX_IMPORT_BYTES", "HUMANLM_MAX_IMPORT_BYTES", 20_000_000, int,
        "Largest file `humanlm corpus import`, `humanlm import-responses` and a dashboard upload "
        "accept (each reads its file whole); a larger data set is imported in parts.",
    ),
    Setting(
        "MAX_GUESS_CHARS", "HUMANLM_MAX_GUESS_CHARS", 200, int,
        "Longest guess text the API accepts.",
    ),
    Setting(
        "DEMO_CORPUS", "HUMANLM_DEMO_CORPUS", "demo", str,
        "Name of the built-in demo corpus that `humanlm setup` imports.",
    ),
    Setting(
        "HOST", "HUMANLM_HOST", "127.0.0.1", str,
        "Address `humanlm serve` listens on.",
    ),
    Setting(
        "PORT", "HUMANLM_PORT", 5000, int,
        "Port `humanlm serve` listens on.",
    ),
    Setting(
        "SERVER_WORKER", "HUMANLM_SERVER_WORKER", "gevent", str,
        "gunicorn worker class of `humanlm serve`: `gevent` (one process, a greenlet per "
        "connection; a class's burst of answers costs half the CPU of threads) or `gthread` "
        "(OS threads, no monkey patching).",
    ),
    Setting(
        "SERVER_THREADS", "HUMANLM_SERVER_THREADS", 400, int,
        "Connections one `humanlm serve` process holds at once (gevent: worker_connections; "
        "gthread: threads, with as many idle keep-alive connections parked besides): each open "
        "phone or projector holds one, so this bounds the class size one server process takes.",
    ),
    Setting(
        "SOCKETIO_MESSAGE_QUEUE", "SOCKETIO_MESSAGE_QUEUE", None, str,
        "Message queue URL (redis://...) shared by several server processes; unset = in-process.",
    ),
    Setting(
        "PUBLIC_URL", "HUMANLM_PUBLIC_URL", None, str,
        "Base URL students type or scan to join a room (e.g. https://humanlm.school.org); "
        "unset = the address the host's browser used.",
    ),
    Setting(
        "TRUSTED_PROXIES", "HUMANLM_TRUSTED_PROXIES", 0, int,
        "Reverse proxies in front of the server whose X-Forwarded-For/-Proto/-Host are believed "
        "(0 = none: the connection's own address is the client's, as on a laptop).",
    ),
    Setting(
        "ROOM_GRACE_SECONDS", "HUMANLM_ROOM_GRACE_SECONDS", 900, int,
        "How long a student who dropped out of a room keeps their seat and nickname.",
    ),
    Setting(
        "ROOM_ANSWER_BATCH_MS", "HUMANLM_ROOM_ANSWER_BATCH_MS", 25, int,
        "Answers arriving within this many milliseconds reach the host's live count together "
        "(0 = one update per answer).",
    ),
    Setting(
        "RESEARCH_SESSION_MINUTES", "HUMANLM_RESEARCH_SESSION_MINUTES", 480, int,
        "A researcher's login lasts this many minutes; after that they must log in again.",
    ),
    Setting(
        "RATE_LIMIT_STORAGE", "HUMANLM_RATE_LIMIT_STORAGE", None, str,
        "Where rate-limit counters live (login attempts, room joins and answers): memory:// for "
        "one process; unset = the Redis of SOCKETIO_MESSAGE_QUEUE when set, else memory://.",
    ),
    Setting(
        "LOGIN_LIMITS", "HUMANLM_LOGIN_LIMITS", "10 per minute;40 per hour", str,
        "Failed research logins allowed per client address and, separately, per e-mail address.",
    ),
    Setting(
        "ROOM_JOIN_LIMITS", "HUMANLM_ROOM_JOIN_LIMITS", "5 per second;30 per minute", str,
        "Room joins allowed per Socket.IO connection (a phone joins once, retrying a taken name).",
    ),
    Setting(
        "ROOM_JOIN_LIMITS_PER_ADDRESS", "HUMANLM_ROOM_JOIN_LIMITS_PER_ADDRESS", "600 per minute", str,
        "Room joins allowed per client address (a class of 200 behind one school NAT).",
    ),
    Setting(
        "ROOM_ANSWER_LIMITS", "HUMANLM_ROOM_ANSWER_LIMITS", "5 per second;60 per minute", str,
        "Room answers allowed per connection (one a round, plus resends of a lost one).",
    ),
    Setting(
        "ROOM_ANSWER_LIMITS_PER_ADDRESS", "HUMANLM_ROOM_ANSWER_LIMITS_PER_ADDRESS", "2400 per minute", str,
        "Room answers allowed per client address (a full room answering 10-second rounds).",
    ),
    Setting(
        "ROOM_PROMPT_LIMITS", "HUMANLM_ROOM_PROMPT_LIMITS", "10 per minute;60 per hour", str,
        "Rooms from a teacher's own prompts (each scored by the model) per client address.",
    ),
    Setting(
        "ROOM_PROMPT_QUEUE", "HUMANLM_ROOM_PROMPT_QUEUE", 90, int,
        "Prompts waiting to be scored in one server process; more are refused with a 429.",
    ),
    Setting(
        "STUDY_RESERVATION_MINUTES", "HUMANLM_STUDY_RESERVATION_MINUTES", 60, int,
        "Items assigned to a participant who has not finished count towards the items' targets "
        "for this many minutes (so participants who start together get different items).",
    ),
    Setting(
        "JOB_QUEUE", "HUMANLM_JOB_QUEUE", None, str,
        "Where background jobs (model numbers of new answers, scoring uploaded passages) wait: "
        "redis://... (shared by several processes) or a SQLite file path; unset = the Redis of "
        "SOCKETIO_MESSAGE_QUEUE when set, else a SQLite file next to the database.",
    ),
    Setting(
        "SERVE_JOBS", "HUMANLM_SERVE_JOBS", True, _bool,
        "`humanlm serve` also runs the background jobs, in a `humanlm worker` process it starts "
        "and stops; false when separate `humanlm worker` processes run them.",
    ),
    Setting(
        "JOB_DELAY_SECONDS", "HUMANLM_JOB_DELAY_SECONDS", 2.0, float,
        "Answers that need the model's numbers are gathered for this many seconds into one job.",
    ),
    Setting(
        "WORKER_NICE", "HUMANLM_WORKER_NICE", 10, int,
        "CPU niceness the job worker adds to itself (0-19): on a busy machine live answers come "
        "before model work. 0 leaves it as started.",
    ),
    Setting(
        "LOG_SQL", "HUMANLM_LOG_SQL", False, _bool,
        "Echo every SQL statement (debugging).",
    ),
)


def load_settings(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then environment variables, then explicit overrides (tests pass these)."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = os.environ.get(setting.env)
        values[setting.key] = setting.parse(raw) if raw not in (None, "") else setting.default
    values.update(overrides or {})
    if not values.get("SECRET_KEY"):
        values["SECRET_KEY"] = _instance_secret_key()
    return values


def _instance_secret_key() -> str:
    """A random key created once per install, so sessions survive restarts without set-up."""
    path = INSTANCE_DIR / "secret_key"
    if path.exists():
        if path.stat().st_mode & 0o077:  # an older install wrote it readable by everyone
            path.chmod(0o600)
        return path.read_text().strip()
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    # Created readable and writable by its owner only: whoever reads it can forge sessions.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key)
    return key
