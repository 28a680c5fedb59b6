"""Fuzzing every JSON route (schemathesis, from /api/openapi.json) and every Socket.IO event
(hypothesis, from the same pydantic declarations): no 5xx, no traceback, a JSON error with a
message for every refusal, and nothing stored by a refused request.

The requests carry a real player's cookie and a real participant's study link, so valid-looking
cases reach the answer path instead of stopping at "who are you?".
"""

from __future__ import annotations

import json
import os
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from research_helpers import consent, make_study, study_row
from schemathesis import GenerationMode
from sqlalchemy import func, select

from webapp.extensions import db, socketio
from webapp.models import Guess, Participant, Player, Room
from webapp.rooms.events import EVENT_PAYLOADS

EXAMPLES = 25  # per operation and generation mode
# CI replays the same examples every run (a red CI must mean a real, reproducible bug); a local
# run explores new ones each time.
DERANDOMIZE = bool(os.environ.get("CI"))


def _stored(app) -> tuple[int, int, int, int]:
    with app.app_context():
        return tuple(
            db.session.scalar(select(func.count(column)))
            for column in (Guess.id, Room.id, Participant.id, Player.id)
        )


@pytest.fixture
def fuzz_target(any_db_app):
    """The scored app, a consented study participant, and that browser's cookie."""
    study_id = make_study(any_db_app)
    slug = study_row(any_db_app, study_id).slug
    browser = any_db_app.test_client()
    csrf = consent(browser, slug, PROLIFIC_PID="fuzzer")
    browser.post("/api/play/next", json={})  # the same browser also plays the solo game
    return any_db_app, slug, csrf, browser.get_cookie("session").value


def _operations(app) -> list:
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_openapi_document_lists_every_json_route(scored_app):
    document = scored_app.test_client().get("/api/openapi.json").get_json()
    routes = {
        re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for rule in scored_app.url_map.iter_rules() if rule.rule.startswith("/api/")
    }
    assert routes - {"/api/openapi.json"} == set(document["paths"])
    answer = document["paths"]["/api/play/guesses"]["post"]["requestBody"]["content"]
    properties = answer["application/json"]["schema"]["properties"]
    assert properties["text"]["maxLength"] == scored_app.config["MAX_GUESS_CHARS"]
    assert properties["item_id"]["maximum"] == 2**31 - 1
    assert set(answer["application/json"]["schema"]["required"]) == {"client_key", "item_id"}


def test_every_json_route_refuses_bad_input_cleanly(fuzz_target):
    """Schemathesis cases, valid and invalid (GenerationMode.NEGATIVE breaks the schema on
    purpose), for every operation in the document."""
    app, slug, csrf, cookie = fuzz_target
    headers = {"X-CSRFToken": csrf, "Cookie": f"session={cookie}"}
    operations = _operations(app)
    assert len(operations) >= 8
    tried = 0
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode), real=st.booleans())
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
                      suppress_health_check=list(HealthCheck))
            def run(case, real):
                nonlocal tried
                tried += 1
                if real and "slug" in (case.path_parameters or {}):
                    case.path_parameters["slug"] = slug  # half the cases reach a real study
                before = _stored(app)
                response = case.call(headers=headers)
                text = response.text
                assert response.status_code < 500, (case.as_curl_command(), text[:500])
                assert "Traceback" not in text
                if response.status_code >= 400:
                    body = json.loads(text)
                    assert isinstance(body.get("error"), str) and body["error"], text
                    assert _stored(app)[:3] == before[:3], (case.as_curl_command(), text)

            try:
                run()
            except Unsatisfiable:
                # an operation without parameters or body has no invalid form to generate
                assert mode == GenerationMode.NEGATIVE and not operation.body and not (
                    operation.path_parameters or operation.query), operation.label
    print(f"\nfuzzed {tried} JSON requests over {len(operations)} operations")
    assert tried >= len(operations) * EXAMPLES


# ------------------------------------------------------------------------------- Socket.IO

JSON_SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False) | st.text(max_size=300)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _event_payloads(model) -> st.SearchStrategy:
    """Objects whose keys are the model's declared fields (each maybe left out) plus sometimes
    an unknown one; the values are any JSON, or text with NUL and lone surrogates."""
    names = list(model.model_fields)
    nasty = st.sampled_from(["a\x00b", "x\ud800y", "\udfff", "", " ", "x" * 5000, "ABCDE"])
    values = JSON_VALUES | nasty | st.integers(min_value=0, max_value=3)
    return st.fixed_dictionaries({}, optional={name: values for name in [*names, "extra"]})


@pytest.mark.parametrize("event", sorted(EVENT_PAYLOADS))
def test_every_socket_event_refuses_bad_payloads_cleanly(scored_app, client, event):
    room = client.post("/api/rooms", json={"source": "corpus", "corpus": "tests", "rounds": 2}).get_json()
    host = socketio.test_client(scored_app, flask_test_client=scored_app.test_client())
    assert host.emit("host_join", {"code": room["code"], "host_token": room["host_token"]}, callback=True)["ok"]
    student = socketio.test_client(scored_app, flask_test_client=scored_app.test_client())
    assert student.emit("join", {"code": room["code"], "nickname": "Fuzz"}, callback=True)["ok"]
    assert host.emit("host_action", {"code": room["code"], "action": "start"}, callback=True)["ok"]
    sender = host if event.startswith("host_") else student
    sent = 0

    @given(payload=_event_payloads(EVENT_PAYLOADS[event]), real_code=st.booleans())
    @settings(max_examples=60, deadline=None, database=None, derandomize=DERANDOMIZE,
              suppress_health_check=list(HealthCheck))
    def fuzz(payload, real_code):
        if real_code and "code" in payload:
            payload["code"] = room["code"]
        if event == "host_join" and "host_token" in payload:
            payload["host_token"] = str(payload["host_token"])  # never the real one
        nonlocal sent
        sent += 1
        before = _stored(scored_app)
        ack = sender.emit(event, payload, callback=True)
        assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
        if not ack["ok"]:
            assert isinstance(ack["error"], str) and ack["error"], ack
            assert "something went wrong" not in ack["error"], (payload, ack)  # no server error
            assert _stored(scored_app)[:2] == before[:2], payload

    fuzz()
    print(f"\nfuzzed {sent} {event} events")
