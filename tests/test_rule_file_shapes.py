"""A payer file of any shape is error lines, never a traceback (harness, issue 11 review).

Every top-level key of a good payer file, and every key of one of its rules and families, is in turn left
out or given a value of another type (null, a number, text, a list, a mapping, a boolean, a fraction); the
loader (Registry, strict as bill reads and lenient as validate reads) must answer each with a
PayrulesError (the command's `error: FILE:LINE: ...` lines), never another exception.

KNOWN_CRASHES are the shapes that still raise something else, reported to the loader's owner (engine/
loader.py); the test requires exactly these, so a new crash fails it and so does a fix (then delete the
entry).
"""
from __future__ import annotations

import yaml

from engine.errors import PayrulesError
from engine.loader import Registry

GOOD = {
    "payer": "acme", "name": "Acme", "extends": "medicare", "method": {"name": "midpoint_per_code"},
    "codes": {"extra": ["97110"]}, "families": [{"id": "fam", "primary": "97545", "addon": "97546"}],
    "rules": [{"id": "acme-limit", "description": "d", "source": "s", "when": {"line": {"code": "97140"}},
               "then": [{"max_units": 2}]}],
    "override": [], "disable": ["group-size"], "effective_from": "2020-01-01",
}
ODD = [None, 5, "x", [], {}, [1], {"a": 1}, True, 1.5]
GONE = object()
MISSPELT = object()

# loader.py: _file_errors reads spec.id (data["payer"]) before checking that "payer" is there (KeyError);
# Registry._apply puts each broken rule's id in a set, and a list or mapping id is unhashable (TypeError)
KNOWN_CRASHES: set = set()    # none left: a file without payer: and a rule id that is a list or mapping


def variants():
    """(where, what, document) for every key left out or given each odd value."""
    def changed(item: dict, key: str, value):
        out = dict(item)
        if value is MISSPELT:               # the key written with its last letter left off: "payr"
            out[key[:-1]] = out.pop(key)
        elif value is GONE:
            del out[key]
        else:
            out[key] = value
        return out

    for value in [GONE, MISSPELT, *ODD]:
        what = "left out" if value is GONE else "misspelt" if value is MISSPELT else repr(value)
        for key in GOOD:
            yield key, what, changed(GOOD, key, value)
        for section in ("rules", "families"):
            for key in GOOD[section][0]:
                yield f"{section}[0].{key}", what, dict(GOOD, **{section: [changed(GOOD[section][0], key, value)]})


def test_every_shape_of_a_payer_file_is_error_lines(tmp_path):
    crashes = set()
    for n, (where, what, document) in enumerate(variants()):
        tree = tmp_path / str(n)
        tree.mkdir()
        (tree / "acme.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
        for strict in (True, False):
            try:
                registry = Registry([tree], strict=strict)
                if strict:
                    registry.listing()
                    registry.check_all("python")
                else:
                    registry.errors()
            except PayrulesError:
                pass
            except Exception as exc:        # noqa: BLE001 - what the harness looks for
                crashes.add((where, what, type(exc).__name__))
    assert crashes == KNOWN_CRASHES


def _messages(tmp_path, text: str) -> list:
    (tmp_path / "acme.yaml").write_text(text, encoding="utf-8")
    return [e.message for e in Registry([tmp_path], strict=False).errors()]


def test_a_payer_that_extends_itself_is_said(tmp_path):
    assert "a payer cannot extend itself" in _messages(tmp_path, "payer: acme\nname: A\nextends: acme\n")


def test_no_payer_and_no_extends_is_not_a_payer_extending_itself(tmp_path):
    # both keys missing are equal (None == None): only the missing keys are said
    messages = _messages(tmp_path, "id: x\n")
    assert "missing required key 'payer'" in messages
    assert "a payer cannot extend itself" not in messages
