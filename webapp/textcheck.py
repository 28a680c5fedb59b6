"""One check for text that is about to be stored: can every database we support hold it?

Two things pass Python's `str` but not the databases:
- NUL (U+0000): PostgreSQL refuses it in text columns; SQLite stores it silently, so a SQLite
  laptop and a PostgreSQL server would disagree. It is refused everywhere.
- lone surrogates (U+D800-U+DFFF, unicode category Cs): halves of a UTF-16 pair, which JSON
  escapes such as "\\ud800" produce on their own. They are not characters, cannot be encoded as
  UTF-8, and break hashing, tokenizing and storing.

Used by the file importers (webapp/corpus.py, webapp/responses.py); meant for any other place
where outside text arrives (web API fields), so all of them refuse the same text the same way.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")  # exactly unicode category Cs


def storable_text_problem(text: str) -> str | None:
    """Why `text` cannot be stored, or None when it can.

    The answer is a phrase that reads after the name of what was checked, for example
    f"line 3: text {problem}" gives "line 3: text contains a NUL character (\\u0000), which
    cannot be stored". Only the first problem found is named.
    """
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    match = _SURROGATE.search(text)
    if match:
        return (
            f"contains a lone surrogate (\\u{ord(match.group()):04x}), half of a UTF-16 pair "
            "and not a character, which cannot be stored"
        )
    return None
