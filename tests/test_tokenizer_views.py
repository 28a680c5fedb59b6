"""Tokenizers side by side (issue 13): the reveal can show how other scored models and GPT-4's
cl100k_base cut the same text, each tokenizer once, without asking any server."""

from __future__ import annotations

from webapp.extensions import db
from webapp.models import LanguageModel


def _model_row(spec: str, name: str, tokenizer: str) -> LanguageModel:
    return LanguageModel(key=f"{spec}|k", spec=spec, name=name, tokenizer=tokenizer, n_vocab=0,
                         top_k=10, temperatures=[1.0], settings={})


def test_the_same_text_cut_by_each_tokenizer_once_and_server_tokenizers_left_out(scored_app):
    with scored_app.app_context():
        db.session.add_all([
            _model_row("openai:http://gpu-box:8000/v1#gpt-4-base;encoding=cl100k_base", "GPT-4 base",
                       "tiktoken:cl100k_base:100277"),
            _model_row("openai:http://gpu-box:8000/v1#meta-llama/Llama-3.1-8B", "Llama 3.1 8B",
                       "openai-server:meta-llama/Llama-3.1-8B"),
        ])
        db.session.commit()
    reply = scored_app.test_client().get("/api/tokenizers", query_string={"text": " unbelievably tokenization"})
    assert reply.status_code == 200
    body = reply.get_json()
    names = [t["name"] for t in body["tokenizers"]]
    assert names[0].startswith("Gemma")  # the game's first
    assert names[1:] == ["GPT-4 base"]  # cl100k_base once, under the scored model's name
    gemma, gpt4 = body["tokenizers"]
    assert "".join(t["text"] for t in gemma["tokens"]) == " unbelievably tokenization"
    assert [t["text"] for t in gpt4["tokens"]] == [" unbelie", "vably", " token", "ization"]
    assert gpt4["n_tokens"] == 4 and gemma["n_tokens"] != gpt4["n_tokens"]
    assert body["left_out"] == ["Llama 3.1 8B"]  # its tokens live on its server
    too_long = scored_app.test_client().get("/api/tokenizers", query_string={"text": "x" * 5000})
    assert too_long.status_code == 400 and "error" in too_long.get_json()
