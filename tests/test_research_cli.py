"""`humanlm researcher ...` and `humanlm study ...` through click's runner, on the database
scored by the real model."""

from __future__ import annotations

import json

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select

from webapp.extensions import db
from webapp.models import Document, Researcher, Study, StudyItem

pytestmark = pytest.mark.model

STUDY_YAML = """\
name: Cloze pilot
slug: cloze-pilot
corpus: tests
mode: token
items: {sample: 8}
items_per_participant: 4
target_responses: 5
order: random
seed: 1234
consent_text: |
  You agree to take part.

  Second paragraph.
show_feedback: true
checks:
  - "To show you are reading, type the word blue: | blue"
check_threshold: 1
completion_code: CODE-1
redirect_url: https://app.prolific.com/submissions/complete?cc={code}
"""


@pytest.fixture
def runner(scored_app):
    return scored_app.test_cli_runner()


def run(runner, *args, input=None):
    return runner.invoke(args=[str(a) for a in args], input=input)


def assert_failed(result, *needles):
    assert result.exit_code != 0, result.output
    assert "Error:" in result.output and "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


def rows(scored_app, model):
    with scored_app.app_context():
        session = db.new_session()
        try:
            return session.scalar(select(func.count()).select_from(model))
        finally:
            session.close()


def test_researcher_add_hashes_the_password_and_refuses_duplicates(scored_app, runner):
    result = run(runner, "researcher", "add", "Ada@Example.org", input="a long password\na long password\n")
    assert result.exit_code == 0, result.output
    assert "a long password" not in result.output  # hidden input, never echoed
    assert "Added researcher ada@example.org" in result.output
    with scored_app.app_context():
        session = db.new_session()
        researcher = session.scalars(select(Researcher)).one()
        assert researcher.email == "ada@example.org" and researcher.password_hash.startswith("$argon2")
        assert PasswordHasher().verify(researcher.password_hash, "a long password")
        session.close()
    duplicate = run(runner, "researcher", "add", "ada@example.org", input="another password\nanother password\n")
    assert_failed(duplicate, "already exists")
    assert rows(scored_app, Researcher) == 1

    listing = run(runner, "researcher", "list")
    assert listing.exit_code == 0 and "ada@example.org" in listing.output and "last login never" in listing.output


def test_researcher_add_rejects_bad_input(scored_app, runner):
    assert_failed(run(runner, "researcher", "add", "bob@example.org", input="short\nshort\n"), "at least 10")
    assert_failed(run(runner, "researcher", "add", "not-an-email", input="a long password\na long password\n"),
                  "not an e-mail address")
    mismatch = run(runner, "researcher", "add", "bob@example.org", input="a long password\ndifferent one!!\n")
    assert mismatch.exit_code != 0 and "Traceback" not in mismatch.output
    assert rows(scored_app, Researcher) == 0
    empty = run(runner, "researcher", "list")
    assert empty.exit_code == 0 and "No researchers yet" in empty.output


def test_study_create_from_yaml_and_json_then_list(scored_app, runner, tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(STUDY_YAML)
    result = run(runner, "study", "create", path)
    assert result.exit_code == 0, result.output
    assert "8 test items, 1 checks, 4 items per participant, target 5" in result.output
    assert "Link: /s/cloze-pilot" in result.output and "Pilot mode is ON" in result.output
    with scored_app.app_context():
        session = db.new_session()
        study = session.scalars(select(Study)).one()
        assert study.consent_text == "You agree to take part.\n\nSecond paragraph."
        assert study.seed == 1234 and study.show_feedback and study.check_threshold == 1.0
        assert study.redirect_url.endswith("cc={code}") and study.pilot
        session.close()

    spec = {"name": "JSON study", "corpus": "tests", "consent_text": "ok", "items_per_participant": 2,
            "pilot": False, "mode": "word"}
    json_path = tmp_path / "study.json"
    json_path.write_text(json.dumps(spec))
    result = run(runner, "study", "create", json_path)
    assert result.exit_code == 0, result.output and "Pilot mode" not in result.output

    listing = run(runner, "study", "list")
    assert listing.exit_code == 0
    assert "/s/cloze-pilot  'Cloze pilot' (open, pilot mode): 0 started" in listing.output
    assert "'JSON study' (open): 0 started" in listing.output


@pytest.mark.parametrize(
    ("content", "suffix", "needles"),
    [
        ("name: [unclosed", ".yaml", ("invalid YAML at line 1",)),
        ("{\"name\": }", ".json", ("invalid JSON at line 1",)),
        ("- just\n- a list\n", ".yml", ("one mapping of settings",)),
        (STUDY_YAML.replace("corpus: tests", "corpus: missing"), ".yaml", ("corpus: there is no corpus 'missing'",)),
        (STUDY_YAML.replace("show_feedback", "show_feeback"), ".yaml", ("show_feeback: unknown setting",)),
        (STUDY_YAML.replace("items_per_participant: 4", "items_per_participant: 40"), ".yaml",
         ("items_per_participant: is 40 but the study has only 8 test items",)),
        (STUDY_YAML.replace("| blue", "blue"), ".yaml", ("checks[0]:",)),
    ],
)
def test_study_create_errors_name_the_field_and_store_nothing(scored_app, runner, tmp_path, content, suffix, needles):
    path = tmp_path / f"study{suffix}"
    path.write_text(content)
    assert_failed(run(runner, "study", "create", path), *needles)
    assert rows(scored_app, Study) == 0 and rows(scored_app, StudyItem) == 0
    with scored_app.app_context():
        session = db.new_session()
        checks = session.scalar(select(func.count(Document.id)).where(Document.source == "study check"))
        session.close()
    assert checks == 0


def test_study_create_missing_file(runner, tmp_path):
    assert_failed(run(runner, "study", "create", tmp_path / "nope.yaml"), "no such file")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00bad")
    assert_failed(run(runner, "study", "create", tmp_path / "bin.yaml"), "not UTF-8")
    empty = run(runner, "study", "list")
    assert empty.exit_code == 0 and "No studies yet" in empty.output


def test_study_create_with_an_owner_and_share(scored_app, runner, tmp_path):
    for email in ("ada@example.org", "bo@example.org"):
        assert run(runner, "researcher", "add", email, input="a long password\na long password\n").exit_code == 0
    path = tmp_path / "study.yaml"
    path.write_text(STUDY_YAML)
    assert_failed(run(runner, "study", "create", path, "--owner", "nobody@example.org"), "no researcher")
    assert rows(scored_app, Study) == 0
    created = run(runner, "study", "create", path, "--owner", "Ada@example.org")
    assert created.exit_code == 0, created.output
    with scored_app.app_context():
        session = db.new_session()
        study = session.scalars(select(Study)).one()
        owner = session.get(Researcher, study.created_by)
        assert owner.email == "ada@example.org"
        session.close()
    assert_failed(run(runner, "study", "share", "cloze-pilot", "cy@example.org"), "no researcher")
    assert_failed(run(runner, "study", "share", "no-such-study", "bo@example.org"), "no study")
    shared = run(runner, "study", "share", "cloze-pilot", "bo@example.org")
    assert shared.exit_code == 0 and "bo@example.org can now see and change" in shared.output
    from webapp.models import StudyAccess

    assert rows(scored_app, StudyAccess) == 1
