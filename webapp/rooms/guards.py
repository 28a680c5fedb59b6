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

import functools
import logging
import math
import threading
import time
from collections.abc import Mapping

from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string
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


class RoomGuards:
    """One per app: the counters' storage and the moving-window limiter over it."""

    def __init__(self, config: Mapping) -> None:
        self.config = config
        self.storage: Storage = storage_from_string(rate_limit_storage(config))
        self.limiter = MovingWindowRateLimiter(self.storage)

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
