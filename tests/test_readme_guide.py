"""The README's "Adding a payer" guide works as written: its YAML validates, compares and bills."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def guide_yaml() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(\s*# my-rules/acme-health\.yaml\n.*?)```", text, re.S)
    assert block, "the guide's payer file is missing from README.md"
    return "\n".join(line[3:] if line.startswith("   ") else line for line in block.group(1).splitlines()) + "\n"


def run(*args):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True, text=True)


SESSION = """\
session_id: T-1
date_of_service: 2026-03-02
discipline: PT
services:
  - {code: "97112", minutes: 24}
  - {code: "97110", minutes: 23}
  - {code: "97140", minutes: 40}
"""


def test_guide_payer_validates_compares_and_bills(tmp_path):
    rules = tmp_path / "my-rules"
    rules.mkdir()
    (rules / "acme-health.yaml").write_text(guide_yaml())
    (tmp_path / "session.yaml").write_text(SESSION)

    proc = run("validate", rules)
    assert proc.returncode == 0, proc.stderr
    assert "ok   " in proc.stdout and "acme-health.yaml" in proc.stdout

    proc = run("compare", tmp_path / "session.yaml", "--payers", "medicare,acme-health", "--rules", rules,
               "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["code"]: row["units"] for row in json.loads(proc.stdout)["rows"]}
    # Medicare: 87 min -> 6 units; full units 1+1+2, leftovers 9, 8, 10 -> the 2 extra go to 97140, 97112.
    # Acme: per code 24 -> 2, 23 -> 2, 40 -> 3, then 97140 capped at 2 by the guide's rule.
    assert rows == {"97112": {"medicare": 2, "acme-health": 2},
                    "97110": {"medicare": 1, "acme-health": 2},
                    "97140": {"medicare": 3, "acme-health": 2}}

    proc = run("bill", tmp_path / "session.yaml", "--payer", "acme-health", "--rules", rules, "--format", "json")
    result = json.loads(proc.stdout)
    limit = [w for w in result["warnings"] if w["rule"] == "acme-manual-therapy-limit"]
    assert len(limit) == 1 and limit[0]["codes"] == ["97140"]
    sources = {t["rule"]: t["source"] for t in result["trace"]}
    assert sources["acme-manual-therapy-limit"].startswith("my-rules/acme-health.yaml:")
    assert sources["timed-pool"].startswith("rules/medicare.yaml:")     # inherited from the parent
