"""Rule citations resolve (issue 11): every `source:` in the bundled rules tree names a file of this
repository, and every section it cites of a Markdown file (`docs/domain.md §3.2`) is a heading there.

Citation convention (docs/domain.md §1): a repository path is `folder/.../name.ext`; the `§N` that follow
a cited `.md` path, up to the next `;`, are sections of that file (`## N.` or `### N.M` headings). A
`§` before the path belongs to the outside document (`CMS Pub. 100-04 Ch. 5 §20.2; docs/domain.md §3`).
"""
import re
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = ROOT / "docs" / "domain.md"

# folder/.../name.ext, not inside a longer token (so a URL's tail or "97129/97130" is no path)
PATH = re.compile(r"(?<![\w./:-])((?:[\w.-]+/)+[\w.-]+\.[A-Za-z]+)")
SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)*)\.? ", re.M)
LABELS = {"CERTAIN", "PAYER-VARIES", "UNCONFIRMED", "EXAMPLE", "ENGINE"}


def headings(md: Path) -> set:
    return set(HEADING.findall(md.read_text(encoding="utf-8")))


def citation_problems(text: str, root: Path) -> list:
    """What is wrong with one `source:` text: no repository path, a path that does not exist, or a
    section of a cited Markdown file that is not a heading there."""
    found = list(PATH.finditer(text))
    if not found:
        return [f"names no repository file: {text!r}"]
    problems = []
    for match in found:
        target = root / match.group(1)
        if not target.is_file():
            problems.append(f"{match.group(1)}: no such file in the repository")
            continue
        if target.suffix == ".md":
            cited = SECTION.findall(text[match.end():].split(";", 1)[0])
            known = headings(target)
            problems += [f"{match.group(1)} §{n}: no such section" for n in cited if n not in known]
    return problems


def sources(node, where: str = ""):
    """Every (key path, text) of a `source` key in a loaded YAML document, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "source" and isinstance(value, str):
                yield f"{where}.source".lstrip("."), value
            else:
                yield from sources(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from sources(value, f"{where}[{index}]")


def bundled_citations(root: Path) -> list:
    out = []
    for path in sorted((root / "rules").rglob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        out += [(f"{path.relative_to(root)}: {key}", text) for key, text in sources(document)]
    return out


def all_problems(root: Path) -> list:
    return [f"{where}: {p}" for where, text in bundled_citations(root) for p in citation_problems(text, root)]


def test_every_bundled_source_names_an_existing_file_and_section():
    citations = bundled_citations(ROOT)
    # the walk reaches every level: medicare.yaml has method.source, assistant_modifiers.source, 5 families,
    # 20 rules, amounts.source and one counter
    assert sum(where.startswith("rules/medicare.yaml: ") for where, _ in citations) == 1 + 1 + 5 + 20 + 1 + 1
    assert any(".tests.yaml: scenarios[" in where for where, _ in citations)
    assert all_problems(ROOT) == []


def test_every_bundled_rule_cites_the_domain_reference():
    """A rule's source names docs/domain.md with a section, so a reader can look the rule up."""
    missing = [where for where, text in bundled_citations(ROOT)
               if ".tests.yaml" not in where and not re.search(r"docs/domain\.md §\d", text)]
    assert missing == []


@pytest.mark.parametrize("text, problem", [
    ("CMS Pub. 100-04 Ch. 5 §20.2; domain.md §3", "names no repository file"),        # the old citation
    ("CMS Pub. 100-04 Ch. 5 §20.2 C", "names no repository file"),
    ("CPT descriptors 97129/97130", "names no repository file"),
    ("CMS Pub. 100-04; docs/missing.md §3", "docs/missing.md: no such file"),
    ("rules/private_payers/nope.yaml disable: x", "rules/private_payers/nope.yaml: no such file"),
    ("CMS Pub. 100-04 Ch. 5 §20.2; docs/domain.md §99", "docs/domain.md §99: no such section"),
    ("docs/domain.md §3.99", "docs/domain.md §3.99: no such section"),
    ("docs/domain.md §3, §99", "docs/domain.md §99: no such section"),
    ("docs/domain.md §3.5 Example 5 and §77 item 4", "docs/domain.md §77: no such section"),
])
def test_a_bad_citation_is_reported(text, problem):
    problems = citation_problems(text, ROOT)
    assert len(problems) == 1 and problem in problems[0], problems


@pytest.mark.parametrize("text", [
    "CMS Pub. 100-04 Ch. 5 §20.2 C; docs/domain.md §3.2, §3.3",     # §20.2 is the manual's, before the path
    "MBPM Ch.15 §230.1 (docs/domain.md §8)",
    "docs/domain.md §5. The 61-min floor is UNCONFIRMED: change it here.",
    "rules/private_payers/example-midpoint.yaml disable: x; docs/domain.md §13.1",
])
def test_a_good_citation_passes(text):
    assert citation_problems(text, ROOT) == []


def test_a_broken_citation_in_a_copy_of_the_rules_tree_is_found(tmp_path):
    """The YAML walk reaches rule sources: break one in a copy and exactly that rule is reported."""
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    medicare = tmp_path / "rules" / "medicare.yaml"
    text = medicare.read_text(encoding="utf-8")
    assert text.count("docs/domain.md §10\"") == 4                    # modifier-gp/go/gn, discipline-missing
    medicare.write_text(text.replace("Ch.5 §20.1; docs/domain.md §10\"", "Ch.5 §20.1; docs/domain.md §41\"", 1),
                        encoding="utf-8")
    family = tmp_path / "rules" / "private_payers" / "example-full-unit.yaml"
    family_text = family.read_text(encoding="utf-8")
    assert family_text.count("docs/domain.md §5, §9\"") == 1                 # the work-hardening family
    family.write_text(family_text.replace("docs/domain.md §5, §9\"", "docs/gone.md\"", 1), encoding="utf-8")
    assert all_problems(tmp_path) == [
        "rules/medicare.yaml: rules[16].source: docs/domain.md §41: no such section",   # modifier-gp
        "rules/private_payers/example-full-unit.yaml: families[0].source: docs/gone.md: no such file in the repository",
    ]


# --- docs/domain.md itself ------------------------------------------------------------------------

def domain_text() -> str:
    return DOMAIN.read_text(encoding="utf-8")


def test_domain_sections_are_numbered_once_each():
    numbers = HEADING.findall(domain_text())
    assert len(numbers) == len(set(numbers)), numbers
    top = [int(n) for n in numbers if "." not in n]
    assert top == list(range(1, len(top) + 1))
    for n in numbers:                                      # a subsection sits under its section
        if "." in n:
            assert n.rsplit(".", 1)[0] in numbers, n


def test_domain_confidence_labels_are_from_the_fixed_set():
    text = re.sub(r"`[^`\n]*`", "", domain_text())         # code such as `tie_break: [minutes, ...]`
    bracketed = re.findall(r"\[([^\[\]\n]+)\](?!\()", text)    # not a Markdown link
    assert bracketed and set(bracketed) <= LABELS, set(bracketed) - LABELS
    # the label table of §1 defines exactly this set
    defined = set(re.findall(r"^\| \[([A-Z-]+)\] \|", text, re.M))
    assert defined == LABELS


def index_rows() -> list:
    """(file, entry, sections, labels) of each row of the rule index (the last section)."""
    index = domain_text().split("## 15. Rule index", 1)[1]
    rows = []
    for line in index.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("rules/"):
            rows.append((cells[0], cells[1], SECTION.findall(cells[2]), [c.strip() for c in cells[3].split(",")]))
    return rows


def payer_files() -> list:
    return sorted(p for p in (ROOT / "rules").rglob("*.yaml") if not p.name.endswith(".tests.yaml"))


def test_rule_index_covers_every_bundled_rule_and_family():
    rows = index_rows()
    known = headings(DOMAIN)
    indexed = set()
    for file, entry, cited, labels in rows:
        assert (ROOT / file).is_file(), file
        assert cited and set(cited) <= known, (file, entry, cited)
        assert labels and set(labels) <= LABELS, (file, entry, labels)
        name = re.search(r"`([^`]+)`", entry).group(1)
        indexed.add((file, ("family " if entry.startswith("family ") else "") + name))
    expected = set()
    for path in payer_files():
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        file = str(path.relative_to(ROOT))
        expected |= {(file, r["id"]) for r in document.get("rules", []) + document.get("override", [])}
        expected |= {(file, "family " + f["id"]) for f in document.get("families", [])}
        if "method" in document:
            expected.add((file, "method"))
        expected |= {(file, key) for key in ("assistant_modifiers", "modifier_order") if key in document}
        # the data tables and PTP settings a file names (docs/domain.md §17), and the edits' rule ids
        expected |= {(file, f"tables.{kind}") for kind in document.get("tables", {})}
        expected |= {(file, f"ptp.{key}") for key in document.get("ptp", {})}
        if {"ptp", "mue"} & set(document.get("tables", {})):
            expected.add((file, "ncci-ptp"))
        # the patient's year (docs/domain.md §18): counters, their thresholds, amounts and their rule id
        for counter in document.get("counters", []):
            expected |= {(file, counter["id"])} | {(file, t["id"]) for t in counter["thresholds"]}
        if "amounts" in document:
            expected |= {(file, "amounts"), (file, "fee-schedule")}
    settings = {(f, n) for f, n in indexed if n in {"method.tie_break", "codes", "disable",
                                                     "assistant_modifiers.both_ge_8_minutes"}}
    assert indexed - settings == expected


def test_every_bundled_rule_and_family_has_a_source():
    """A rule or family with no `source:` at all is not found by the walk above: each must have one."""
    import yaml
    bare = []
    for path in sorted((ROOT / "rules").rglob("*.yaml")):
        if path.name.endswith(".tests.yaml"):
            continue
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for section in ("rules", "override", "families"):
            bare += [f"{path.name}: {section}[{i}]" for i, item in enumerate(data.get(section) or [])
                     if not item.get("source")]
    assert bare == []
