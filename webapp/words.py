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
- Probability (chain rule):
      ln p(word) = sum_i ln p(w_i | prefix, w_1..w_{i-1}) + ln P(boundary | prefix, word)
  where w_1..w_n are the word's tokens (its canonical tokenization) and the last term, the
  probability that the word ends there, is the total probability of all boundary tokens at the
  next position (full vocabulary). Without it "Paris" would also collect the mass of
  "Parisian", whose first token is the same.
- Computation: ONE forward pass over the item's document, then the word's tokens evaluated from
  that pass's cache after the prefix (the backend's `score_continuations`): every word answered
  at any position of a document shares the document's pass, and each distinct (item, word) is
  evaluated once. A word that is the document's own next tokens is read off the pass itself.
- Stems (norms imported without a true next word) have no true word: only the answers to
  them are scored, continued from the position after the stem's last token.
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


def target_word(document: Document, item: Item) -> str | None:
    """The word that actually follows the item's prefix (see the module docstring); None at a
    stem, which has no true continuation."""
    if item.token_text is None:
        return None
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


def boundary_mask(model: Tokenizer) -> np.ndarray:
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
    """(sum of the word's token log-probs, ln P(the word ends there)): one pass over the
    prefix, then the word's tokens from its cache."""
    p = len(prefix_ids)
    scored = model.score_continuations(prefix_ids, {p: [word_ids]}, end_set=boundary_mask(model))
    result = scored.continuations[p][0]
    if result is None:
        raise ValueError("the word does not fit the model's context after this prefix")
    return result.logprob, float(result.end_logprob)


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
    ids = word_token_ids(model, document.text[: item.char_start], word)
    if not ids:
        raise ValueError("an empty word has no probability")
    scored = model.score_continuations(
        document.token_ids, {item.position: [ids]}, end_set=boundary_mask(model)
    )
    result = scored.continuations[item.position][0]
    if result is None:
        raise ValueError("the word does not fit the model's context after this prefix")
    tokens_lp, end_lp = result.logprob, float(result.end_logprob)
    score = WordScore(
        item_id=item.id, model_id=row.id, word=word, token_ids=ids,
        tokens_logprob=tokens_lp, end_logprob=end_lp, logprob=tokens_lp + end_lp,
    )
    session.add(score)
    session.flush()
    return score


class WordPlan:
    """The word work of one document: which (item, word) pairs still need the model, as
    continuations per item position, and the answers waiting for them."""

    def __init__(self, session: Session, model: Tokenizer, row: LanguageModel, document: Document,
                 answers: list[tuple[int, int, str]]) -> None:
        items = {item.id: item for item in document.items}
        wanted = {item_id for _gid, item_id, _text in answers}
        self.known: dict[tuple[int, str], float] = {
            (item_id, word): logprob
            for item_id, word, logprob in session.execute(
                select(WordScore.item_id, WordScore.word, WordScore.logprob).where(
                    WordScore.model_id == row.id, WordScore.item_id.in_(wanted)
                )
            )
        }
        self.continuations: dict[int, list[list[int]]] = {}
        self._asked: list[tuple[int, str, list[int], int, int]] = []  # ..., position, index
        self._answers: list[tuple[int, int, str]] = []
        planned: set[tuple[int, str]] = set()

        def want(item: Item, word: str) -> None:
            key = (item.id, word)
            if key in self.known or key in planned:
                return
            planned.add(key)
            ids = word_token_ids(model, document.text[: item.char_start], word)
            if ids:
                at = self.continuations.setdefault(item.position, [])
                self._asked.append((item.id, word, ids, item.position, len(at)))
                at.append(ids)

        for item_id in sorted(wanted):  # the true word first, as a fill always stored it
            truth = target_word(document, items[item_id])
            if truth is not None:  # a stem has none: only its answers are scored
                want(items[item_id], truth)
        for guess_id, item_id, text in answers:
            word = text.strip()[:MAX_WORD_CHARS]
            if word:
                want(items[item_id], word)
                self._answers.append((guess_id, item_id, word))

    def collect(self, results: dict) -> dict[tuple[int, str], tuple[list[int], float, float]]:
        """The new WordScores from the backend's continuations: (item, word) -> (token ids,
        sum of token log-probs, end log-prob); words that did not fit are left out."""
        new = {}
        for item_id, word, ids, position, index in self._asked:
            result = results[position][index]
            if result is not None:
                tokens_lp, end_lp = result.logprob, float(result.end_logprob)
                new[(item_id, word)] = (ids, tokens_lp, end_lp)
                self.known[(item_id, word)] = tokens_lp + end_lp
        return new

    def answers(self):
        """(guess id, word log-prob or None when it could not be computed) per answer."""
        for guess_id, item_id, word in self._answers:
            yield guess_id, self.known.get((item_id, word))


def plan_words(session: Session, model: Tokenizer, row: LanguageModel, document: Document,
               answers: list[tuple[int, int, str]]) -> WordPlan:
    return WordPlan(session, model, row, document, answers)


def fill_word_logprobs(session: Session, model: LanguageModelBackend, *, top_k: int) -> int:
    """Word-mode answers without a model log-prob get one (and their item's true word too).

    One forward pass per document with such answers, each distinct (item, word) evaluated once
    from it and cached in WordScore (webapp.predictions.run_model_work). Returns the number of
    answers filled.
    """
    from .predictions import run_model_work

    return run_model_work(session, model, top_k=top_k, predictions=False, words=True).words
