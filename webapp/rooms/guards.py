"""What keeps a room usable when someone tries to break it: rate limits on joins and answers, and
a bound on the teachers' prompts waiting to be scored (the host's lock against new joins is a
column of the room, `Room.joins_locked`, so it survives a restart).

Counters live where the login limiter keeps its own (webapp.extensions.rate_limit_storage:
memory:// for one process, else the Redis of the Socket.IO queue), so every server process of a
room counts together. The `limits` library is used directly because Socket.IO events are not
Flask routes that Flask-Limiter could decorate.

Defaults, for a real class behind one school NAT: 200 phones joining within a minute and
answering within seconds stay well inside the per-address limits, while one connection gets a
few events per second. The limits are settings (HUMANLM_ROOM_*, webapp/config.py).
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import threading
import time
from collections.abc import Mapping

from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from ..extensions import rate_limit_storage
from .state import RoomRuleError

log = logging.getLogger(__name__)

def setting(config: Mapping, key: str):
    """A room limit from the settings table (webapp/config.py: HUMANLM_ROOM_*_LIMITS ...)."""
    return config[key]


class RateLimited(RoomRuleError):
    """Too many events: the message says which and from where; retry_after is in seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@functools.lru_cache(maxsize=64)
def _parsed(limits: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(limits))


# What each event is called in a refusal, and its limit settings (connection, address).
EVENTS = {
    "join": ("join attempts", "ROOM_JOIN_LIMITS", "ROOM_JOIN_LIMITS_PER_ADDRESS"),
    "guess": ("answers", "ROOM_ANSWER_LIMITS", "ROOM_ANSWER_LIMITS_PER_ADDRESS"),
}


class _WindowStats:
    def __init__(self, reset_time: float) -> None:
        self.reset_time = reset_time


class LocalMovingWindows:
    """The moving-window limiter of `limits`, for counters that live in this process only.

    Why not `limits`' own memory:// storage: it starts a new expiry timer thread on nearly every
    hit, and when a class of 200 answers within a second those threads cost more CPU than
    storing the answers. Here old hits are dropped when a key is next looked at, and keys
    nobody has used for a window are swept every few thousand hits. Same interface as
    MovingWindowRateLimiter (test, hit, get_window_stats)."""

    SWEEP_EVERY = 4096

    def __init__(self) -> None:
        self._hits: dict[tuple, collections.deque] = {}
        self._lock = threading.Lock()
        self._count = 0

    def _window(self, item: RateLimitItem, keys: tuple, now: float) -> collections.deque:
        hits = self._hits.get((item.key_for(*keys),))
        if hits is None:
            hits = self._hits[(item.key_for(*keys),)] = collections.deque()
        horizon = now - item.get_expiry()
        while hits and hits[0] <= horizon:
            hits.popleft()
        return hits

    def test(self, item: RateLimitItem, *keys) -> bool:
        with self._lock:
            return len(self._window(item, keys, time.time())) < item.amount

    def hit(self, item: RateLimitItem, *keys) -> bool:
        now = time.time()
        with self._lock:
            hits = self._window(item, keys, now)
            if len(hits) >= item.amount:
                return False
            hits.append(now)
            self._count += 1
            if self._count % self.SWEEP_EVERY == 0:
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - 86_400}
            return True

    def get_window_stats(self, item: RateLimitItem, *keys) -> _WindowStats:
        now = time.time()
        with self._lock:
            hits = self._window(item, keys, now)
            oldest = hits[0] if hits else now
        return _WindowStats(oldest + item.get_expiry())


class RoomGuards:
    """One per app: the counters' storage and the moving-window limiter over it (in this
    process for memory://, else `limits` over the shared store, e.g. Redis)."""

    def __init__(self, config: Mapping) -> None:
        self.config = config
        uri = rate_limit_storage(config)
        self.limiter: LocalMovingWindows | MovingWindowRateLimiter
        if uri.startswith("memory://"):
            self.limiter = LocalMovingWindows()
        else:
            self.limiter = MovingWindowRateLimiter(storage_from_string(uri))

    # ---------------------------------------------------------------- rate limits

    def check(self, event: str, connection: str, address: str | None) -> None:
        """Count one `event` from this connection and address, or raise RateLimited.

        A refused event is not counted, so a client that waits as told gets in. When the
        counters' store is unreachable the event is let through (and logged): a broken Redis
        must not lock a class out of its lesson.
        """
        what, per_connection, per_address = EVENTS[event]
        checks = [(item, ("room", event, "connection", connection), "this connection")
                  for item in _parsed(setting(self.config, per_connection))]
        checks += [(item, ("room", event, "address", address or "unknown"), "your network")
                   for item in _parsed(setting(self.config, per_address))]
        try:
            for item, keys, source in checks:
                if not self.limiter.test(item, *keys):
                    reset = self.limiter.get_window_stats(item, *keys).reset_time
                    wait = max(1, math.ceil(reset - time.time()))
                    raise RateLimited(
                        f"too many {what} from {source} ({item}); try again in {wait} s", wait
                    )
            for item, keys, _ in checks:
                self.limiter.hit(item, *keys)
        except RateLimited:
            raise
        except Exception:
            log.warning("room rate limits unavailable; letting a %s through", event, exc_info=True)


_guards_lock = threading.Lock()


def guards_of(app) -> RoomGuards:
    """The app's RoomGuards, made on first use (the app's config names the storage)."""
    guards = app.extensions.get("humanlm_room_guards")
    if guards is None:
        with _guards_lock:
            guards = app.extensions.get("humanlm_room_guards")
            if guards is None:
                guards = app.extensions["humanlm_room_guards"] = RoomGuards(app.config)
    return guards


# ------------------------------------------------------------------------ prompts to score


class PromptQueue:
    """How many prompt documents wait to be scored by this process's background tasks.

    Scoring runs one pass at a time (one llama.cpp context per process), so without a bound a
    stream of prompt rooms would pile up threads and memory without end; a room whose prompts
    do not fit is refused at once instead (503), before anything is stored.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waiting = 0

    def reserve(self, n: int, capacity: int) -> bool:
        with self._lock:
            if self.waiting + n > capacity:
                return False
            self.waiting += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.waiting = max(0, self.waiting - n)


prompt_queue = PromptQueue()
