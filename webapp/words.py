"""Word-level mode: the next *word* instead of the next token, and the model's probability of it.

Method (also in the export codebook):
- Word boundaries. A token continues the current word when its text starts with a letter, a
  digit, or one of the in-word marks ' ’ -; any other token (starting with whitespace or
  punctuation, or a control token such as <eos>) starts something new, which ends the word.
- The true next word of an item is the text of its token (without the leading whitespace) plus
  the following tokens of the document while they continue the word. Word-mode items must start
  a word (`is_word_start`).
- Leading space. A typed word is scored as the model would see it after the prefix: with one
  leading space, unless the prefix is empty or ends in whitespace (then without).
- Probability (chain rule, ONE forward pass over prefix + word):
      ln p(word) = sum_i ln p(w_i | prefix, w_1..w_{i-1}) + ln P(boundary | prefix, word)
  where w_1..w_n are the word's tokens (its canonical tokenization) and the last term, the
  probability that the word ends there, is the total probability of all boundary tokens at the
  next position (full vocabulary). Without it "Paris" would also collect the mass of
  "Parisian", whose first token is the same.
- Limits: only the canonical tokenization is counted (other tokenizations of the same string
  have small but non-zero probability, so ln p(word) is a slight underestimate); the boundary
  rule is orthographic (it treats "New" in "New York" as a whole word, and a hyphen as in-word);
  casing is the participant's: "paris" and "Paris" are different words to the model.
"""

from __future__ import annotations

import unicodedata

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from .lm import LanguageModelBackend, Tokenizer
from .models import Document, Item, LanguageModel, WordScore

IN_WORD_MARKS = "'’-"
MAX_WORD_CHARS = 100


def continues_word(text: str) -> bool:
    """Does a token with this text continue the word before it?"""
    return bool(text) and (text[0].isalnum() or text[0] in IN_WORD_MARKS)


def is_word_start(document: Document, item: Item) -> bool:
    """An item whose token begins a word: it starts with whitespace, or follows whitespace."""
    text = item.token_text
    if text[:1].isspace():
        return bool(text.strip())
    if not continues_word(text):
        return False
    if item.position == 0:
        return True
    previous = document.items[item.position - 1].token_text
    return previous[-1:].isspace()


def target_word(document: Document, item: Item) -> str:
    """The word that actually follows the item's prefix (see the module docstring)."""
    parts = [item.token_text.lstrip()]
    for following in document.items[item.position + 1 :]:
        if not continues_word(following.token_text):
            break
        parts.append(following.token_text)
    return "".join(parts)


def normalize_word(text: str) -> str:
    """For comparing answers: NFC, no surrounding whitespace or punctuation, case-folded."""
    text = unicodedata.normalize("NFC", text).strip()
    start, end = 0, len(text)
    while start < end and not (text[start].isalnum()):
        start += 1
    while end > start and not (text[end - 1].isalnum()):
        end -= 1
    return text[start:end].casefold()


def word_matches(answer: str, target: str) -> bool:
    """An answer is correct when it is the true word, ignoring case, spaces and punctuation
    around it ("Paris." and " paris" match "Paris")."""
    return bool(normalize_word(answer)) and normalize_word(answer) == normalize_word(target)


def word_token_ids(tokenizer: Tokenizer, prefix_text: str, word: str) -> list[int]:
    """The word's tokens as they would follow the prefix (leading-space convention above)."""
    word = word.strip()
    lead = "" if not prefix_text or prefix_text[-1:].isspace() else " "
    return tokenizer.tokenize(lead + word)


_boundary_masks: dict[str, np.ndarray] = {}


def _boundary_mask(model: LanguageModelBackend) -> np.ndarray:
    """True for every vocabulary token that would end a word, computed once per tokenizer
    (keyed by tokenizer id, so the cache does not keep model objects alive)."""
    mask = _boundary_masks.get(model.tokenizer_id)
    if mask is None:
        mask = np.zeros(model.n_vocab, dtype=bool)
        for token_id in range(model.n_vocab):
            text = model.token_bytes(token_id).decode("utf-8", "replace")
            mask[token_id] = model.is_control(token_id) or not continues_word(text)
        _boundary_masks[model.tokenizer_id] = mask
    return mask


def word_logprob(
    model: LanguageModelBackend, prefix_ids: list[int], word_ids: list[int]
) -> tuple[float, float]:
    """(sum of the word's token log-probs, ln P(the word ends there)), one forward pass."""
    token_logprobs, next_row = model.continuation_logprobs(prefix_ids, word_ids)
    boundary = next_row[_boundary_mask(model)]
    peak = float(boundary.max())
    end = peak + float(np.log(np.exp(boundary - peak).sum()))
    return float(sum(token_logprobs)), end


def score_word(
    session: Session, model: LanguageModelBackend, row: LanguageModel, item: Item, word: str
) -> WordScore:
    """The stored WordScore of `word` after the item's prefix, computing it if needed."""
    word = word.strip()[:MAX_WORD_CHARS]
    cached = session.scalar(
        select(WordScore).where(
            WordScore.item_id == item.id, WordScore.model_id == row.id, WordScore.word == word
        )
    )
    if cached is not None:
        return cached
    document = item.document
    prefix_ids = list(document.token_ids[: item.position])
    prefix_text = document.text[: item.char_start]
    ids = word_token_ids(model, prefix_text, word)
    if not ids:
        raise ValueError("an empty word has no probability")
    tokens_lp, end_lp = word_logprob(model, prefix_ids, ids)
    score = WordScore(
        item_id=item.id, model_id=row.id, word=word, token_ids=ids,
        tokens_logprob=tokens_lp, end_logprob=end_lp, logprob=tokens_lp + end_lp,
    )
    session.add(score)
    session.flush()
    return score


def fill_word_logprobs(session: Session, model: LanguageModelBackend, *, top_k: int) -> int:
    """Word-mode answers without a model log-prob get one (and their item's true word too).

    One forward pass per distinct (item, word); results are cached in WordScore, committed per
    answer so an interrupted run resumes. Returns the number of answers filled.
    """
    from .models import Guess
    from .predictions import check_tokenizer, get_or_create_model_row

    row = get_or_create_model_row(session, model, top_k)
    pending = session.scalars(
        select(Guess).where(
            Guess.mode == "word", Guess.word_logprob.is_(None), Guess.skipped.is_(False),
            (Guess.model_id == row.id) | Guess.model_id.is_(None),
        ).order_by(Guess.item_id)
    ).all()
    filled = 0
    for guess in pending:
        item = guess.item
        check_tokenizer(model, item.document)
        score_word(session, model, row, item, target_word(item.document, item))
        if guess.raw_text.strip():
            guess.word_logprob = score_word(session, model, row, item, guess.raw_text).logprob
            guess.model_id = row.id
            filled += 1
        session.commit()
    return filled
