"""Pure rules of a classroom room: join codes, nicknames and the round phases.

Why pure functions: the Socket.IO handlers, the HTTP routes and the tests must agree on exactly
one set of rules, and rules without I/O can be tested exhaustively (every phase x action).
Every rule violation raises RoomRuleError with a message meant for the person who caused it.
"""

from __future__ import annotations

import functools
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


# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): characters a font draws as
# nothing. Python's unicodedata has no such property, so the ranges are listed here; every other
# format character (category Cf) is dropped from the comparison too.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)


def _ignorable(char: str) -> bool:
    code = ord(char)
    if unicodedata.category(char) == "Cf":
        return True
    return any(low <= code <= high for low, high in _DEFAULT_IGNORABLE)


@functools.cache
def _prototypes() -> dict[str, str]:
    """Each confusable character -> the prototype it looks like (Unicode TR39 confusables.txt).

    The table comes from confusable-homoglyphs, which keeps confusables.txt as an undirected
    graph: every component is one prototype and the characters mapped to it, so the prototype is
    the member with the most neighbours (for a pair, the multi-character one, else the ASCII
    one, else the lower code point; for telling names apart any fixed choice works).
    """
    from confusable_homoglyphs import confusables

    def clean(text: str) -> str:
        return text.replace("\u200e", "")  # the table wraps right-to-left letters in LRM marks

    neighbours: dict[str, set[str]] = {}
    for char, homoglyphs in confusables.confusables_data.items():
        for entry in homoglyphs:
            a, b = clean(char), clean(entry["c"])
            if a and b and a != b:
                neighbours.setdefault(a, set()).add(b)
                neighbours.setdefault(b, set()).add(a)
    mapping: dict[str, str] = {}
    seen: set[str] = set()
    for start in neighbours:
        if start in seen:
            continue
        component, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node not in component:
                component.add(node)
                todo.extend(neighbours[node])
        seen |= component
        prototype = max(
            component,
            key=lambda n: (len(neighbours[n]), len(n) > 1, n.isascii(), -ord(n[0])),
        )
        for node in component:
            if len(node) == 1 and node != prototype:
                mapping[node] = prototype
    return mapping


def _skeleton(text: str) -> str:
    """TR39's skeleton: decompose, replace every character by its prototype, decompose again."""
    table = _prototypes()
    mapped = "".join(table.get(c, c) for c in unicodedata.normalize("NFD", text))
    return unicodedata.normalize("NFD", mapped)


@functools.lru_cache(maxsize=4096)
def nickname_keys(name: str) -> frozenset[str]:
    """What a nickname looks like, for telling two names apart; equal keys = the same name.

    NFKC (full-width and styled letters become plain ones), case folded, default-ignorable and
    format characters removed (zero-width spaces, joiners, variation selectors, Hangul fillers),
    whitespace collapsed, then TR39's confusables skeleton (Cyrillic А, Greek Α -> A; I, 1 -> l;
    0 -> O) and a final case fold. Folding case before the skeleton loses that a capital I looks
    like l, and folding it after loses that ALICE is alice, so a name has two keys: case folded
    first, and skeleton first. Two names are alike when any of their keys are equal.
    """
    plain = " ".join(
        "".join(c for c in unicodedata.normalize("NFKC", name) if not _ignorable(c)).split()
    )
    folded_first = _skeleton(plain.casefold()).casefold()
    skeleton_first = _skeleton(plain).casefold()
    return frozenset(k for k in (folded_first, skeleton_first) if k)


def names_alike(name: str, other: str) -> bool:
    return not nickname_keys(name).isdisjoint(nickname_keys(other))


@functools.cache
def _blocked_keys() -> tuple[str, ...]:
    return tuple(_letters(k) for word in BLOCKED_WORDS for k in nickname_keys(word))


def validate_nickname(name: str, taken: set[str]) -> str:
    """Return the cleaned nickname, or raise RoomRuleError saying what to change.

    Cleaning: strip, collapse every run of whitespace (tabs, newlines included) to one space.
    Rules on the cleaned name: 1-20 characters, printable only (no control or invisible
    format characters), some visible character, no blocked word in its letters (also when
    written with look-alike letters), and not alike any name in `taken` (nickname_keys: case,
    full-width forms, invisible characters and look-alike letters do not make a new name).
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
    keys = nickname_keys(cleaned)
    if not keys:
        raise RoomRuleError("type a nickname with visible letters or digits")
    letters = {_letters(cleaned)} | {_letters(k) for k in keys}
    if any(word in text for word in _blocked_keys() for text in letters):
        raise RoomRuleError("choose another nickname: this one contains a word we do not allow")
    for other in taken:
        if not keys.isdisjoint(nickname_keys(other)):
            shown = " ".join(other.split())
            raise RoomRuleError(
                f"someone is already called {shown!r} (or a name that looks the same): "
                "add a letter or a number"
            )
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
