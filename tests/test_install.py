"""The installed package: a wheel built from the checkout holds the package payer_rules (the source folder
engine/ under its installed name, with its rules, schemas and py.typed) and nothing named engine; the
installed package bills as the checkout does, from another directory; and the README's "Use from Python"
example, run as written against it, prints what the README shows.

The wheel is built once for the module (pip wheel, ~2-5 s): without build isolation when the `wheel`
package is installed, else with it (pip then fetches setuptools and wheel from the package index).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import engine

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel .` builds from a copy of the checkout's packaged files (a build leaves
    build/ and *.egg-info behind: not in the work tree)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("engine", "rules", "schemas"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    isolation = [] if importlib.util.find_spec("wheel") is None else ["--no-build-isolation"]
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *isolation,
                          "--wheel-dir", str(root / "dist"), str(source)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    (built,) = (root / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed in a directory of its own (a pure wheel installs by unpacking it), to be put
    on PYTHONPATH; the dependencies are this interpreter's."""
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def run_installed(installed: Path, args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(installed))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_wheel_installs_payer_rules_and_no_engine_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert {n.split("/")[0] for n in names} == {"payer_rules", f"payer_rules-{engine.__version__}.dist-info"}
    for path in ("payer_rules/py.typed", "payer_rules/__main__.py", "payer_rules/api.py",
                 "payer_rules/rules/medicare.yaml", "payer_rules/rules/private_payers/example-midpoint.yaml",
                 "payer_rules/rules/ncci/ptp-practitioner-excerpt.txt",     # the table medicare.yaml names
                 "payer_rules/schemas/session.schema.json", "payer_rules/schemas/payer.schema.json",
                 "payer_rules/service.py", "payer_rules/web/page.html", "payer_rules/web/app.js",
                 "payer_rules/web/style.css"):
        assert path in names
    assert re.search(r"^payrules = payer_rules:run$", entry_points, re.M), entry_points


def test_installed_service_serves_the_page_and_the_openapi_schemas(installed, tmp_path):
    script = ("import warnings; warnings.simplefilter('ignore')\n"
              "from starlette.testclient import TestClient\n"
              "from payer_rules.api import RuleBook\nfrom payer_rules.service import create_app\n"
              "c = TestClient(create_app(RuleBook()))\n"
              "print(c.get('/').status_code, c.get('/static/app.js').status_code,"
              " 'Session' in c.get('/openapi.json').json()['components']['schemas'])")
    run = run_installed(installed, ["-c", script], tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["200", "200", "True"]


def test_installed_package_bills_as_the_checkout(installed, tmp_path):
    """From a directory that is not the checkout: `python -m payer_rules` bills an example as `python -m
    engine` does in the checkout (rule sources are rules/medicare.yaml:NN there too), the payrules entry
    point's function runs, and no module named engine is imported."""
    example = str(REPO / "examples" / "pt-evaluation.yaml")
    checkout = subprocess.run([sys.executable, "-m", "engine", "bill", example], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
    run = run_installed(installed, ["-m", "payer_rules", "bill", example], tmp_path)
    assert run.returncode == checkout.returncode == 0, run.stderr
    assert json.loads(run.stdout) == json.loads(checkout.stdout)
    assert re.fullmatch(r"rules/medicare\.yaml:\d+", json.loads(run.stdout)["trace"][0]["source"])
    assert run_installed(installed, ["-m", "payer_rules", "--help"], tmp_path).returncode == 0
    script = ("import sys, payer_rules\n"
              "sys.argv = ['payrules', 'payers', '--format', 'json']\n"
              "code = payer_rules.run()\n"
              "book = payer_rules.RuleBook()\n"
              "assert book.bill({'payer': 'medicare', 'services': [{'code': '97110', 'minutes': 8}]})['total_units'] == 1\n"
              "print(payer_rules.__file__, sorted(m for m in sys.modules if m.split('.')[0] == 'engine'), code,"
              " file=sys.stderr)\n")
    run = run_installed(installed, ["-c", script], tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == json.loads(subprocess.run(
        [sys.executable, "-m", "engine", "payers", "--format", "json"], cwd=REPO, capture_output=True, text=True,
        timeout=120).stdout)
    where, _, rest = run.stderr.strip().partition(" ")
    assert Path(where).is_relative_to(installed) and rest == "[] 0"


def readme_example() -> tuple[str, str]:
    """The python block of README.md's "Use from Python" section and the text block that follows it."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Use from Python\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    output = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    return code, output


def test_readme_python_example_runs_as_written(installed):
    """Run as written, from the checkout's root, against the installed package. The output block is worked
    by hand in the README (CMS 8-minute rule, domain.md §3.1-3.3): 33 + 7 = 40 timed minutes -> 3 units;
    97110 has 2 full units with 3 minutes left, 97140 has 7 left, so 97140 gets the third; GP for PT.
    97530 60 minutes -> 4 units (53-67); a session with no services is its error record. One patient's
    sessions given March first: 97110 38 min = 3 units x $30.00 (synthetic schedule, 2026) = $90; in date
    order February takes $2,350 to $2,440 (<= $2,480, no KX), March to $2,530 (> $2,480, KX; domain.md §18.2)."""
    code, output = readme_example()
    assert "import payer_rules" in code and "bill_many" in code and "PayrulesError" in code
    run = run_installed(installed, ["-c", code], REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout == output
