"""Pure rules of a classroom room: join codes, nicknames and the round phases.

Why pure functions: the Socket.IO handlers, the HTTP routes and the tests must agree on exactly
one set of rules, and rules without I/O can be tested exhaustively (every phase x action).
Every rule violation raises RoomRuleError with a message meant for the person who caused it.
"""

from __future__ import annotations

import random
import re
import unicodedata
from enum import Enum


class RoomRuleError(ValueError):
    """A room rule was broken; str(error) is a short message saying what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ---------------------------------------------------------------- join codes

# Upper-case letters and digits without the look-alikes 0/O, 1/I/L: read aloud or from a projector,
# a code cannot be mistyped into another valid code through these pairs.
AMBIGUOUS_CHARACTERS = frozenset("0O1IL")
JOIN_CODE_ALPHABET = "".join(
    c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ23456789" if c not in AMBIGUOUS_CHARACTERS
)
_CODE_SEPARATORS = re.compile(r"[\s\-_.]+")


def new_join_code(rng: random.Random, length: int = 5) -> str:
    """A random code from JOIN_CODE_ALPHABET (31 symbols; 5 characters give 28.6 million codes).

    `rng` is injected so tests are reproducible; the web layer should pass
    `random.SystemRandom()` so codes cannot be predicted from earlier ones.
    """
    if length < 1:
        raise ValueError("length must be >= 1")
    return "".join(rng.choice(JOIN_CODE_ALPHABET) for _ in range(length))


def normalize_join_code(text: str) -> str:
    """Turn what a student typed into the canonical code, or say what is wrong with it.

    Steps: Unicode NFKC (full-width "ＡＢ２" -> "AB2"), upper-case, drop spaces, dashes,
    underscores and dots ("ab-c d" -> "ABCD"). The confusable characters 0, O, 1, I and L are
    NOT mapped to anything: the alphabet contains neither member of those pairs, so no guess
    would be right; they are rejected with a message instead. Any other character outside the
    alphabet is rejected too. Length is not checked here (an unknown code is "not found").
    """
    code = _CODE_SEPARATORS.sub("", unicodedata.normalize("NFKC", text).upper())
    if not code:
        raise RoomRuleError("type the join code shown by your teacher")
    if any(c in AMBIGUOUS_CHARACTERS for c in code):
        raise RoomRuleError(
            "join codes never contain 0, O, 1, I or L: check the code on the board"
        )
    bad = sorted({c for c in code if c not in JOIN_CODE_ALPHABET})
    if bad:
        raise RoomRuleError(
            f"join codes use only letters and the digits 2-9; remove {' '.join(bad)!s}"
        )
    return code


# ---------------------------------------------------------------- nicknames

NICKNAME_MAX_CHARS = 20

# A short, mild block list, matched case-insensitively on the letters of the name only (so
# "F.u c k" and "superfuckhero" are caught). Words that occur inside ordinary names are left out
# on purpose: "shit" (Harshit, Ashita), "damn" (Adam N...), "ass" (Cassandra), "hell" (Hello),
# "cunt" (Scunthorpe). The teacher can still remove a player.
BLOCKED_WORDS: tuple[str, ...] = (
    "fuck",
    "bitch",
    "bastard",
    "wanker",
    "bollocks",
    "asshole",
    "dickhead",
)


def _letters(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalpha())


def validate_nickname(name: str, taken: set[str]) -> str:
    """Return the cleaned nickname, or raise RoomRuleError saying what to change.

    Cleaning: strip, collapse every run of whitespace (tabs, newlines included) to one space.
    Rules on the cleaned name: 1-20 characters, printable only (no control or invisible
    format characters), not in `taken` ignoring case (Unicode casefold), and no blocked word
    in its letters.
    """
    cleaned = " ".join(name.split())
    if not cleaned:
        raise RoomRuleError("type a nickname")
    if len(cleaned) > NICKNAME_MAX_CHARS:
        raise RoomRuleError(
            f"use at most {NICKNAME_MAX_CHARS} characters (this one has {len(cleaned)})"
        )
    if not cleaned.isprintable():
        raise RoomRuleError("remove the invisible or control characters from the nickname")
    letters = _letters(cleaned)
    if any(word in letters for word in BLOCKED_WORDS):
        raise RoomRuleError("choose another nickname: this one contains a word we do not allow")
    folded = cleaned.casefold()
    if any(" ".join(t.split()).casefold() == folded for t in taken):
        raise RoomRuleError(f"someone is already called {cleaned!r}: add a letter or a number")
    return cleaned


# ---------------------------------------------------------------- round phases


class Phase(str, Enum):
    """Where a room is. One round is ANSWERING -> LOCKED -> REVEAL; `next` starts another."""

    LOBBY = "lobby"  # students join, no question yet
    ANSWERING = "answering"  # a question is open and guesses are accepted
    LOCKED = "locked"  # no more guesses; the true token is still hidden
    REVEAL = "reveal"  # the true token, the model's view and the class's guesses are shown
    FINISHED = "finished"  # the room is closed for good


ACTIONS = ("start", "lock", "reveal", "next", "finish")

# Every legal (phase, action) pair; anything else raises. Decisions:
# - reveal needs LOCKED: revealing from ANSWERING is NOT allowed, the teacher locks first, so no
#   guess can arrive after the true token was shown (the research rule of the solo game).
# - finish is allowed from LOBBY (close an unused room) and REVEAL (after a shown round) only:
#   every round that collected guesses is revealed to the students before the room closes.
TRANSITIONS: dict[tuple[Phase, str], Phase] = {
    (Phase.LOBBY, "start"): Phase.ANSWERING,
    (Phase.LOBBY, "finish"): Phase.FINISHED,
    (Phase.ANSWERING, "lock"): Phase.LOCKED,
    (Phase.LOCKED, "reveal"): Phase.REVEAL,
    (Phase.REVEAL, "next"): Phase.ANSWERING,
    (Phase.REVEAL, "finish"): Phase.FINISHED,
}


def transition(current: Phase, action: str) -> Phase:
    """The phase after `action`, or RoomRuleError("cannot <action> while <phase>")."""
    if action not in ACTIONS:
        raise RoomRuleError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    try:
        return TRANSITIONS[(current, action)]
    except KeyError:
        raise RoomRuleError(f"cannot {action} while {current.value}") from None
