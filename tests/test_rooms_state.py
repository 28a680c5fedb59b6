"""webapp.rooms.state: join codes, nicknames and every (phase, action) pair of the round rules."""

from __future__ import annotations

import random

import pytest

from webapp.rooms.state import (
    ACTIONS,
    JOIN_CODE_ALPHABET,
    TRANSITIONS,
    Phase,
    RoomRuleError,
    new_join_code,
    normalize_join_code,
    transition,
    validate_nickname,
)

# ---------------------------------------------------------------- join codes


def test_alphabet_has_no_ambiguous_characters():
    assert not set("0O1IL") & set(JOIN_CODE_ALPHABET)
    assert len(JOIN_CODE_ALPHABET) == len(set(JOIN_CODE_ALPHABET)) == 31
    assert JOIN_CODE_ALPHABET.isupper() and JOIN_CODE_ALPHABET.isalnum()


def test_new_join_code_is_reproducible_and_uses_the_alphabet():
    code = new_join_code(random.Random(1))
    assert code == new_join_code(random.Random(1))
    assert len(code) == 5
    codes = [new_join_code(random.Random(seed), length=8) for seed in range(200)]
    assert all(len(c) == 8 and set(c) <= set(JOIN_CODE_ALPHABET) for c in codes)
    assert len(set(codes)) == 200


def test_new_join_code_rejects_bad_length():
    with pytest.raises(ValueError):
        new_join_code(random.Random(0), length=0)


def test_new_codes_normalize_to_themselves():
    rng = random.Random(7)
    for _ in range(50):
        code = new_join_code(rng)
        assert normalize_join_code(code) == code
        assert normalize_join_code(code.lower()) == code


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("abc23", "ABC23"),
        ("  ab-c 23 ", "ABC23"),
        ("AB_C.2-3", "ABC23"),
        ("ＡＢＣ２３", "ABC23"),  # full-width (phone keyboards)
        ("ab\tc\n23", "ABC23"),
    ],
)
def test_normalize_join_code(typed, expected):
    assert normalize_join_code(typed) == expected


@pytest.mark.parametrize("typed", ["AB0CD", "abocd", "AB1CD", "abicd", "ablcd"])
def test_normalize_rejects_ambiguous_characters(typed):
    with pytest.raises(RoomRuleError, match="never contain 0, O, 1, I or L"):
        normalize_join_code(typed)


@pytest.mark.parametrize("typed", ["AB#CD", "ABÉCD", "AB!"])
def test_normalize_rejects_other_characters(typed):
    with pytest.raises(RoomRuleError, match="remove"):
        normalize_join_code(typed)


@pytest.mark.parametrize("typed", ["", "   ", " - "])
def test_normalize_rejects_empty(typed):
    with pytest.raises(RoomRuleError, match="type the join code"):
        normalize_join_code(typed)


# ---------------------------------------------------------------- nicknames


def test_nickname_is_stripped_and_spaces_collapsed():
    assert validate_nickname("  Ada   Lovelace\t ", set()) == "Ada Lovelace"
    assert validate_nickname("Zoë 🦊", set()) == "Zoë 🦊"


def test_nickname_length_limits():
    assert validate_nickname("x" * 20, set()) == "x" * 20
    assert validate_nickname("J", set()) == "J"
    with pytest.raises(RoomRuleError, match="at most 20 characters"):
        validate_nickname("x" * 21, set())
    # collapsing happens before counting
    assert validate_nickname("ab" + " " * 30 + "cd", set()) == "ab cd"


@pytest.mark.parametrize("name", ["", "   ", "\n\t"])
def test_empty_nickname(name):
    with pytest.raises(RoomRuleError, match="type a nickname"):
        validate_nickname(name, set())


@pytest.mark.parametrize("name", ["Ann\x00", "Bo\u200bb", "Cy\x1b[31m"])
def test_nickname_must_be_printable(name):
    with pytest.raises(RoomRuleError, match="invisible or control"):
        validate_nickname(name, set())


def test_nickname_uniqueness_is_case_insensitive():
    taken = {"Ada", "Grace Hopper"}
    with pytest.raises(RoomRuleError, match="already called"):
        validate_nickname("ada", taken)
    with pytest.raises(RoomRuleError, match="already called"):
        validate_nickname(" GRACE   hopper ", taken)
    assert validate_nickname("Ada2", taken) == "Ada2"


@pytest.mark.parametrize(
    "name", ["fuck", "FUCK", "SuperFuckHero", "f.u c-k", "big bitch", "Wanker99"]
)
def test_blocked_words_are_found_inside_names_and_across_punctuation(name):
    with pytest.raises(RoomRuleError, match="choose another nickname"):
        validate_nickname(name, set())


@pytest.mark.parametrize("name", ["Harshit", "Cassandra", "Scunthorpe", "Hello", "Adam Nguyen"])
def test_ordinary_names_are_not_blocked(name):
    assert validate_nickname(name, set()) == name


# ---------------------------------------------------------------- round phases

LEGAL = {
    (Phase.LOBBY, "start"): Phase.ANSWERING,
    (Phase.LOBBY, "finish"): Phase.FINISHED,
    (Phase.ANSWERING, "lock"): Phase.LOCKED,
    (Phase.LOCKED, "reveal"): Phase.REVEAL,
    (Phase.REVEAL, "next"): Phase.ANSWERING,
    (Phase.REVEAL, "finish"): Phase.FINISHED,
}


def test_transition_table_is_the_documented_one():
    assert TRANSITIONS == LEGAL
    assert ACTIONS == ("start", "lock", "reveal", "next", "finish")


@pytest.mark.parametrize("pair", sorted(LEGAL, key=str))
def test_legal_transitions(pair):
    assert transition(*pair) is LEGAL[pair]


ILLEGAL = [(p, a) for p in Phase for a in ACTIONS if (p, a) not in LEGAL]


def test_there_are_nineteen_illegal_pairs():
    assert len(ILLEGAL) == 5 * 5 - 6


@pytest.mark.parametrize("phase, action", ILLEGAL)
def test_every_illegal_transition_raises(phase, action):
    with pytest.raises(RoomRuleError) as error:
        transition(phase, action)
    assert str(error.value) == f"cannot {action} while {phase.value}"


def test_reveal_while_answering_requires_lock_first():
    with pytest.raises(RoomRuleError, match="cannot reveal while answering"):
        transition(Phase.ANSWERING, "reveal")
    assert transition(transition(Phase.ANSWERING, "lock"), "reveal") is Phase.REVEAL


def test_unknown_action():
    with pytest.raises(RoomRuleError, match="unknown action 'pause'"):
        transition(Phase.ANSWERING, "pause")


def test_a_whole_room():
    phase = Phase.LOBBY
    for action in ["start", "lock", "reveal", "next", "lock", "reveal", "finish"]:
        phase = transition(phase, action)
    assert phase is Phase.FINISHED
