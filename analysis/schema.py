"""The export format: every table and column humanlm exports, with type, unit and meaning.

One definition used on both sides: `webapp.export` writes exactly these columns (and the
codebook from this text), `analysis.load` reads and checks them. A test fails when the exporter
writes a column this schema does not document, or the reverse.

Conventions: log-probabilities are natural logs (nats) over the model's full vocabulary at
temperature 1, never renormalised over the top-k; times are UTC ISO 8601; JSON columns hold
compact JSON text in CSV and native lists/objects in JSONL and Parquet.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = "1"
FORMATS = ("csv", "jsonl", "parquet")
TYPES = ("int", "float", "str", "bool", "json", "datetime")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # one of TYPES
    description: str
    unit: str = ""
    nullable: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


C = Column

GUESSES = Table(
    "guesses",
    "One row per human answer (long format), with the model's view of that answer and item.",
    (
        C("guess_id", "int", "Row id of the answer."),
        C("participant_id", "str", "Pseudonymous participant id (random; no personal data)."),
        C("source", "str", "Where the answer came from: game (solo), room (classroom), study, external (imported)."),
        C("study_id", "int", "Study the answer belongs to.", nullable=True),
        C("room_id", "int", "Classroom room the answer belongs to.", nullable=True),
        C("item_id", "int", "Item (document position) answered."),
        C("document_id", "int", "Document the item is in."),
        C("corpus", "str", "Corpus name of the document."),
        C("position", "int", "0-based token position of the item in its document.", unit="tokens"),
        C("mode", "str", "token: the answer is scored by its first model token; word: by the whole next word; pairwise: a judgement of which of two tokens came next; distribution: 100 points spread over candidates (both described in judgement, with is_correct empty)."),
        C("prefix_text", "str", "The text shown before the answer (everything before the item)."),
        C("target_text", "str", "What actually followed: the true next token (token mode) or word (word mode). Empty for an answer to a stem (a sentence people completed, imported without a true next word; match_rule no_target): there is none.", nullable=True),
        C("target_token_id", "int", "Model token id of the true next token. Empty for a stem: then is_correct, model_target_logprob and model_target_rank are empty too, and accuracy and target log-prob measures do not apply; the answer's model log-prob and the model's entropy do.", nullable=True),
        C("answer_text", "str", "The answer exactly as typed (empty for a skip)."),
        C("answer_token_ids", "json", "Model token ids of the answer tokenized on its own (list)."),
        C("answer_first_token_id", "int", "First model token id of the answer.", nullable=True),
        C("answer_first_token_text", "str", "Text of that first token.", nullable=True),
        C("skipped", "bool", "True when the participant chose \"I don't know\"."),
        C("is_correct", "bool", "Token mode: the answer's first token == the true next token. Word mode: the answer is the true next word, ignoring case and surrounding spaces and punctuation. Empty for an answer to a stem (nothing to be correct about).", nullable=True),
        C("match_rule", "str", "How is_correct was decided. Token mode: first_token (correct), first_token_if_space_toggled (near miss: right with the leading space toggled; counted wrong), none, skip. Word mode: word (correct), word_mismatch, skip. Stems (no true next word): no_target, is_correct empty. Comprehension checks: every answered check row has match_rule = check (is_correct = passed: the answer equals the study's expected answer ignoring case, surrounding spaces and punctuation); a skipped check has match_rule = skip like any skip, and its item_id is among studies.settings.checks. Check rows are not test items: leave them out of accuracy."),
        C("answer_index", "int", "1-based order of this answer among the participant's answers (for learning curves).", unit="answers"),
        C("reaction_ms", "float", "Time from showing the question to submitting, measured in the browser.", unit="ms", nullable=True),
        C("server_received_at", "datetime", "When the server received the answer (UTC)."),
        C("stored_at", "datetime", "When the answer was committed to the database (UTC)."),
        C("judgement", "json", "Pairwise and distribution answers (empty otherwise). Pairwise: object {kind: \"pairwise\", left_probability (0.01-0.99, the person's chance that the LEFT token is the original; empty for a skip), true_on_left, true_probability (r = the person's chance for the original), alternative: {index (into items.model_alternatives.tokens), id, text, logprob (ln G, nats)}, true_logprob (ln G of the original, nats)}. Distribution: object {kind: \"distribution\", bets: [{text, token_ids, first_token_id, points (0-100), model_logprob (ln p of the first token, nats; empty until filled when outside the stored top-k)}], else_points (on \"something else\"), true_cell (index of the first bet whose first token is the true next token; len(bets) = something else)}; candidates that share a first token form one cell.", nullable=True),
        C("reported_probability", "float", "The participant's own probability that the answer is right, when the study asked for it.", unit="probability 0-1", nullable=True),
        C("model_id", "int", "Model whose numbers fill the model_* columns (see models).", nullable=True),
        C("model_answer_logprob", "float", "ln p_model(answer): of its first token (token mode) or of the whole word (word mode). Distribution mode: the model's log score on the person's cells, ln of its mass on the cell holding the true token. Empty when not computed (answer outside the stored top-k and not yet filled) and in pairwise mode.", unit="nats", nullable=True),
        C("model_answer_rank", "int", "Rank of the answer's first token in the model's distribution (1 = most likely). Token mode only.", nullable=True),
        C("model_target_logprob", "float", "ln p_model(true next token), or of the true next word in word mode. Empty for a stem (no true next word) or before scoring.", unit="nats", nullable=True),
        C("model_target_rank", "int", "Rank of the true next token (1 = the model's top choice). Empty for a stem (no true next word), in word mode, or before scoring.", nullable=True),
        C("model_top1_id", "int", "The model's most likely next token.", nullable=True),
        C("model_top1_text", "str", "Its text.", nullable=True),
        C("model_entropy", "float", "Entropy of the model's full next-token distribution.", unit="nats", nullable=True),
        C("pilot", "bool", "Answer from a pilot run of a study (excluded from assignment counts)."),
        C("excluded", "bool", "The participant is flagged for exclusion (e.g. failed comprehension checks); never dropped silently."),
        C("external", "bool", "Imported with `humanlm import-responses` (collected outside humanlm)."),
    ),
)

ITEMS = Table(
    "items",
    "One row per item that has at least one exported answer: the model's distribution and the human answer counts.",
    (
        C("item_id", "int", "Item id (document position)."),
        C("document_id", "int", "Document id."),
        C("corpus", "str", "Corpus name."),
        C("position", "int", "0-based token position in the document.", unit="tokens"),
        C("prefix_text", "str", "Text before the item."),
        C("target_token_id", "int", "True next token id. Empty for a stem: a sentence people completed, imported without a true next word, whose item is the position after its last token (position = its length in tokens); model_entropy, model_top_k and model_logz then describe the model's distribution after the stem.", nullable=True),
        C("target_text", "str", "True next token text. Empty for a stem.", nullable=True),
        C("next_token_text", "str", "Text of the token after the true next token in the document (empty at the end); says whether the true token ends a whole word.", nullable=True),
        C("model_id", "int", "Model of the model_* columns.", nullable=True),
        C("model_target_logprob", "float", "ln p_model(true next token). Empty for a stem.", unit="nats", nullable=True),
        C("model_target_rank", "int", "Rank of the true next token. Empty for a stem.", nullable=True),
        C("model_top1_id", "int", "The model's most likely token.", nullable=True),
        C("model_entropy", "float", "Entropy of the full next-token distribution.", unit="nats", nullable=True),
        C("model_top_k", "json", "The model's k most likely tokens: list of [token_id, logprob (nats), text, is_control], most likely first.", nullable=True),
        C("model_logz", "json", "log Z(T) = logsumexp(logprob/T) over the full vocabulary for each T in models.temperatures; p_T(token) = exp(logprob/T - logZ(T)).", nullable=True),
        C("model_alternatives", "json", "Pairwise alternatives, when the corpus asks for them (humanlm corpus import --pairwise-alternatives N): object {seed: [corpus seed, document key, position], tokens: [[token_id, logprob (nats), text], ...]}, tokens drawn with replacement from the model's full distribution at T = 1 in the order drawn. Empty otherwise.", nullable=True),
        C("n_answers", "int", "Exported answers to this item (skips included).", unit="answers"),
        C("answer_counts", "json", "Object {first token id: number of answers}; skips are not counted here.", nullable=False),
    ),
)

PARTICIPANTS = Table(
    "participants",
    "One row per participant with at least one exported answer.",
    (
        C("participant_id", "str", "Pseudonymous participant id."),
        C("source", "str", "game, room, study or external."),
        C("study_id", "int", "Study, if any.", nullable=True),
        C("room_id", "int", "Room, if any.", nullable=True),
        C("external_id", "str", "Recruitment-platform id (e.g. PROLIFIC_PID) given in the study link.", nullable=True),
        C("started_at", "datetime", "First answer or study start (UTC).", nullable=True),
        C("finished_at", "datetime", "Study completion (UTC).", nullable=True),
        C("n_answers", "int", "Exported answers.", unit="answers"),
        C("pilot", "bool", "Took part in a pilot run."),
        C("excluded", "bool", "Flagged for exclusion."),
        C("exclusion_reason", "str", "Why, e.g. comprehension checks 1/3 below threshold 2/3.", nullable=True),
        C("url_prolific_pid", "str", "PROLIFIC_PID exactly as given in the study link (also in external_id).", nullable=True),
        C("url_study_id", "str", "STUDY_ID from the study link: the recruitment platform's id of the study.", nullable=True),
        C("url_session_id", "str", "SESSION_ID from the study link: the platform's id of this attempt (a run resumes only with the same one).", nullable=True),
        C("url_participant", "str", "participant from the study link (the generic id of platforms other than Prolific; external_id when PROLIFIC_PID is absent).", nullable=True),
        C("duplicate_of", "str", "participant_id of the first run of the same study started with the same platform id (external_id) that this run could not resume: the same person twice, or someone using their id. Both runs are kept; decide before paying or analysing.", nullable=True),
    ),
)

STUDIES = Table(
    "studies",
    "One row per study with exported answers; its settings exactly as run.",
    (
        C("study_id", "int", "Study id."),
        C("name", "str", "Study name."),
        C("mode", "str", "token or word."),
        C("settings", "json", "Every study setting (items per participant, order and seed, target responses, feedback shown, comprehension threshold, ...)."),
        C("created_at", "datetime", "When the study was created (UTC)."),
    ),
)

MODELS = Table(
    "models",
    "One row per model referenced by the export, with its scoring settings.",
    (
        C("model_id", "int", "Model id."),
        C("key", "str", "Unique key: spec, file hash prefix, k and temperature grid."),
        C("spec", "str", "Model spec, e.g. llamacpp:gemma-3-270m."),
        C("name", "str", "Model name from its metadata."),
        C("tokenizer", "str", "Tokenizer id."),
        C("n_vocab", "int", "Vocabulary size.", unit="tokens"),
        C("top_k", "int", "How many top tokens were stored per item.", unit="tokens"),
        C("temperatures", "json", "The temperature grid of items.model_logz (list of floats)."),
        C("settings", "json", "Backend settings (context size, file hash, threads ...)."),
    ),
)

ANSWER_MODELS = Table(
    "answer_models",
    "One row per (answer, model): the answer's log-probability under every model that scored it, by the chain rule over that model's OWN tokens, so models with different tokenizers are compared on the same answers (long format: pivot on model_id to put models side by side). Token and word answers that are not skips; only the exported answers.",
    (
        C("guess_id", "int", "The answer (guesses.guess_id)."),
        C("model_id", "int", "The model (models.model_id)."),
        C("answer_logprob", "float", "ln p_model(answer text | prefix text) = the sum of the log-probs of the answer's tokens, the prefix (the document text before the item) and the answer as typed each tokenized by this model on its own (word mode: the word with one leading space unless the prefix ends in whitespace, PLUS end_logprob). Approximation: the two tokenizations are concatenated, which need not be how the model would tokenize the whole string (a non-canonical split at the boundary), and other tokenizations of the same text are not counted (a slight underestimate). Empty when the model cannot give it: an answer with no tokens, no room left in the model's context, or a top-k-only server (any word end term, a token beyond its top-k).", unit="nats", nullable=True),
        C("answer_n_tokens", "int", "How many of this model's tokens the answer is (0: none).", unit="tokens"),
        C("end_logprob", "float", "Word mode: ln P(the token after the word starts a new word), the word-end term included in answer_logprob (see the word method in README.md). Empty in token mode.", unit="nats", nullable=True),
        C("first_token_logprob", "float", "ln p_model(the answer's first token) at the item, exactly as guesses.model_answer_logprob in token mode (answer_first_token_id). Only where same_tokenizer: the token ids of another tokenizer mean nothing to this model.", unit="nats", nullable=True),
        C("first_token_rank", "int", "Rank of that first token (1 = the model's top choice). Only where same_tokenizer; empty beyond a top-k-only server's k.", nullable=True),
        C("same_tokenizer", "bool", "The model's tokenizer is the one the corpus was played with (its token positions are the items): then first_token_* are given and the per-position numbers of guesses and items apply to it."),
    ),
)

ITEM_MODELS = Table(
    "item_models",
    "One row per (item, model): each model's view of an item with exported answers, under its OWN tokens (comparable across tokenizers; long format: pivot on model_id).",
    (
        C("item_id", "int", "The item (items.item_id)."),
        C("model_id", "int", "The model (models.model_id)."),
        C("target_logprob", "float", "ln p_model(the true next token's text | prefix text): the text from the item to the next item of the document, tokenized by this model on its own after the prefix tokenized on its own (chain rule, as answer_models.answer_logprob). For a same-tokenizer model it equals items.model_target_logprob. Empty for a stem (no true continuation) or when the model cannot give it.", unit="nats", nullable=True),
        C("target_word_logprob", "float", "ln p_model(the true next word | prefix text) plus its word-end term, as word-mode answers are scored (the true word: target_text of word-mode answers). Only at items that begin a word; empty elsewhere, for a stem, and for a top-k-only server.", unit="nats", nullable=True),
        C("entropy", "float", "Entropy of the model's full next-token distribution after the prefix in its own tokens. Empty for a top-k-only server.", unit="nats", nullable=True),
        C("top1_text", "str", "Text of the model's most likely next token after the prefix (its own vocabulary).", nullable=True),
        C("top1_starts_word", "bool", "top1_text without leading whitespace is non-empty and begins the true next word (a control token never does): top-1 accuracy comparable across tokenizers. Empty for a stem.", nullable=True),
        C("same_tokenizer", "bool", "The model's tokenizer is the one the corpus was played with."),
        C("logz", "json", "log Z(T) = logsumexp(logprob/T) over the model's FULL vocabulary at this item, for each T in its models.temperatures (list of floats, as items.model_logz): p_T(token) = exp(logprob/T - logz[i]). Lets T* be fitted for any model with the game's tokenizer, with answer_models.first_token_logprob. Only where same_tokenizer and the model's per-position prediction at this item stored it; empty otherwise (another tokenizer, a top-k-only server, no prediction yet; never computed from a top-k). Added to schema 1 later: an older export lacks the column, read as empty.", nullable=True),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (GUESSES, ITEMS, PARTICIPANTS, STUDIES, MODELS)}
# Added to schema version 1 after its first exports: every model's numbers on the same answers
# and items, in long tables. An export written before them has no such files, which means no
# model's per-answer numbers (read them as empty tables). TABLES are in every export.
MODEL_TABLES: dict[str, Table] = {t.name: t for t in (ANSWER_MODELS, ITEM_MODELS)}
EXPORT_TABLES: dict[str, Table] = {**TABLES, **MODEL_TABLES}  # what webapp.export writes


def codebook_rows() -> list[dict[str, str]]:
    """One row per column of every exported table: the content of codebook.csv."""
    return [
        {
            "table": table.name,
            "column": col.name,
            "type": col.type,
            "unit": col.unit,
            "nullable": "yes" if col.nullable else "no",
            "description": col.description,
        }
        for table in EXPORT_TABLES.values()
        for col in table.columns
    ]
