"""The JSON Schemas themselves are valid Draft 2020-12 (the engine does not re-check them at run time),
and the plain-Python fast path never accepts a session the session schema rejects."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from engine.sessions import fast_services

SCHEMAS = sorted((Path(__file__).resolve().parent.parent / "schemas").glob("*.schema.json"))


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_schema_is_valid_draft_2020_12(path):
    Draft202012Validator.check_schema(json.loads(path.read_text()))


SESSION = Draft202012Validator(json.loads((Path(__file__).resolve().parent.parent / "schemas" /
                                           "session.schema.json").read_text()))
GOOD = {"session_id": "S", "payer": "medicare", "date_of_service": "2026-03-02", "discipline": "PT",
        "services": [{"code": "97110", "minutes": 30, "group_size": 2, "provider": "PTA"}], "context": {}}


@pytest.mark.parametrize("change", [
    {},                                                      # the valid session itself
    {"session_id": ""}, {"session_id": "x" * 129}, {"session_id": True}, {"payer": ""}, {"payer": 5},
    {"date_of_service": "2026-3-2"}, {"discipline": "PTA"}, {"services": []}, {"extra": 1},
    {"services": [{"code": "9711", "minutes": 1}]}, {"services": [{"code": 97110.0, "minutes": 1}]},
    {"services": [{"code": "97110", "minutes": -1}]}, {"services": [{"code": "97110", "minutes": 1441}]},
    {"services": [{"code": "97110", "minutes": True}]}, {"services": [{"code": "97110"}]},
    {"services": [{"code": "97110", "minutes": 1, "group_size": -1}]},
    {"services": [{"code": "97110", "minutes": 1, "provider": "MD"}]},
    {"services": [{"code": "97110", "minutes": 1}] * 201}, {"context": []},
])
def test_fast_path_agrees_with_the_schema(change):
    session = {**GOOD, **change}
    schema_ok = SESSION.is_valid(session)
    # the fast path may send a valid session on to the schema, but never pass an invalid one
    assert fast_services(session) is None or schema_ok
    if change == {}:
        assert fast_services(session) is not None and schema_ok
