"""Token classes from token text, for accuracy per kind of token.

Why from text: the export stores each target token's text and the text before it, which is all
a reader of the passage sees too. The classes follow how a reader would name the gap:
"the next word", "the rest of this word", "a punctuation mark", "a number".
"""

from __future__ import annotations

import unicodedata

CLASSES = ("word_start", "word_continuation", "punctuation", "number", "other")
CLASS_LABELS = {
    "word_start": "word start",
    "word_continuation": "word continuation",
    "punctuation": "punctuation",
    "number": "number",
    "other": "other",
}
# Characters after which a letter begins a new word even without a space: opening brackets
# and quotes, dashes and slashes.
OPENERS = "([{\"“‘«„—–/"
# Marks that continue a word (as webapp/words.py: "don't", "well-known").
IN_WORD_MARKS = "'’-"
SPACE_MARKERS = "▁Ġ"  # SentencePiece / byte-level BPE space markers, in case raw pieces are exported
NUMBER_MARKS = ".,:%/'’+-−"


def _strip_space(text: str) -> tuple[bool, str]:
    core = text.lstrip()
    core = core.lstrip(SPACE_MARKERS) if core[:1] in SPACE_MARKERS else core
    core = core.lstrip()
    return len(core) < len(text), core


def token_class(text: str, prefix: str | None = None) -> str:
    """Class of a token from its text and the text before it.

    Rules, in order (the leading whitespace of the token is set aside first):
      punctuation        every remaining character is Unicode punctuation or a symbol (P*, S*)
      number             it has a digit, no letter, and otherwise only . , : % / ' + - marks
      word_start         it starts with a letter, digit or ' ’ - and either had leading
                         whitespace, or the prefix is empty or ends in whitespace or an opening
                         bracket/quote/dash/slash
      word_continuation  it starts with a letter, digit or ' ’ - right after a non-space
                         character of the prefix (the rest of a word)
      other              anything else (whitespace-only, empty, or mixed shapes)
    """
    if not text:
        return "other"
    had_space, core = _strip_space(text)
    if not core:
        return "other"
    cats = [unicodedata.category(ch) for ch in core]
    if all(cat[0] in "PS" for cat in cats):
        return "punctuation"
    has_digit = any(cat == "Nd" for cat in cats)
    has_letter = any(cat[0] == "L" for cat in cats)
    if has_digit and not has_letter and all(
        cat == "Nd" or ch in NUMBER_MARKS for ch, cat in zip(core, cats)
    ):
        return "number"
    first = core[0]
    if first.isalnum() or first in IN_WORD_MARKS:
        if had_space or not prefix or prefix[-1].isspace() or prefix[-1] in OPENERS:
            return "word_start"
        return "word_continuation"
    return "other"


def continues_word(text: str) -> bool:
    """Does a token with this text continue the word before it (no space, starts in-word)?"""
    return bool(text) and (text[0].isalnum() or text[0] in IN_WORD_MARKS)
