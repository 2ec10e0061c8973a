"""Shared fixtures: the bundled registry and a helper that bills a session dict on one engine."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

# The rule cache (engine/cache.py) of the whole run, and of every `python -m engine` it starts (they
# inherit os.environ): a private folder removed at the end, never the user's ~/.cache. Set before any
# engine module can read it.
_CACHE = tempfile.mkdtemp(prefix="payrules-test-cache-")
os.environ["PAYRULES_CACHE"] = _CACHE
# The payers the tests expect are the bundled ones (and the --rules trees they name): not the trees a
# developer's own PAYRULES_RULES adds.
os.environ.pop("PAYRULES_RULES", None)


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)


from engine.billing import Biller
from engine.loader import Registry
from engine.network import durable_available
from engine.sessions import parse_session
from engine.yamlload import Located

ENGINES = ["python"] + (["durable"] if durable_available() else [])


@pytest.fixture(scope="session")
def registry():
    return Registry()


@pytest.fixture(scope="session")
def billers(registry):
    # remember=False: every session's facts go through the engine itself, so the durable/python
    # cross-checks compare the networks on each session (tests/test_plans.py checks the memo)
    made = {engine: Biller(registry, engine, remember=False) for engine in ENGINES}
    yield made
    for biller in made.values():
        biller.close()


def session_from(data: dict, number: int = 1):
    """A session dict (as it would be read from a file) → Session or SessionError."""
    data = json.loads(json.dumps(data))
    return parse_session(data, Located(data, {(): 1}, "<test>"), (), number)


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


@pytest.fixture
def bill(billers, engine):
    """bill({'services': [...]}, payer='medicare') → result dict, on the parametrised engine."""
    def run(data: dict, payer: str = "medicare", date: str | None = None):
        return billers[engine].bill(session_from(data), payer, date)
    return run


def units_of(result: dict) -> dict:
    """{code: units} of the billed lines."""
    return {line["code"]: line["units"] for line in result["lines"]}
