"""CMS NCCI tables (engine/tables.py; issue 12 item 6; design.md §6, domain.md §10 and §17.3).

Every table here is SYNTHETIC: written in the CMS practitioner layouts with pairs and values made up for
the test (the therapy codes are real codes; the edits, dates and MUE values are not CMS data). Expected
lines and edits are worked by hand from the text written, in the comments beside them.
"""
from __future__ import annotations

import datetime
import hashlib
import mmap
import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import cache, tables
from engine.errors import RuleFileError
from engine.tables import TableError, load_mue, load_ptp

PTP_HEADER = ("Column 1\tColumn 2\t*=in existence prior to 1996\tEffective Date\tDeletion Date *=no data\t"
              "Modifier 0=not allowed 1=allowed 9=not applicable\tPTP Edit Rationale")
MUE_HEADER = '"HCPCS/\nCPT Code","Practitioner Services MUE Values","MUE Adjudication Indicator","MUE Rationale"'
NOTICE = "SYNTHETIC test table, not CMS data. CPT codes, descriptions and other data only are copyright AMA."


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private cache folder for the test (cache._directory reads PAYRULES_CACHE once per process)."""
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("PAYRULES_CACHE", str(folder))
    cache._directory.cache_clear()
    yield folder
    cache._directory.cache_clear()


def write(path: Path, lines: list[str], newline: str = "\n", bom: bool = False, encoding: str = "utf-8") -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join(lines).encode(encoding))
    return path


def found(table, codes, date):
    """The edits as (column 1, column 2, modifier, line) for short comparisons."""
    return [(e.column1, e.column2, e.modifier, e.line) for e in table.edits(codes, date)]


# ---------------------------------------------------------------- PTP layout

def test_ptp_preamble_crlf_windows_1252_and_a_header_that_goes_on(tmp_path, cache_dir):
    path = write(tmp_path / "ptp.txt", [
        "CPT only copyright 2025 American Medical Association.\xae All rights reserved.",   # line 1
        "Column1/Column2 Edits",                                                           # line 2
        "Column 1\tColumn 2\t*=in existence\tEffective\tDeletion\tModifier\tPTP Edit",      # line 3: header
        "\t\tprior to 1996\tDate\tDate *=no data\t0=not allowed 1=allowed 9=n/a\tRationale",  # line 4: goes on
        "97140\t97530\t\t20200101\t*\t1\tMisuse of column two code with column one code",   # line 5
        "97161\t97140\t*\t19960101\t20210101\t0\tMutually exclusive \u2013 procedures",     # line 6
        "", "", ""], newline="\r\n", encoding="cp1252")
    table = load_ptp(path, "rules/ncci/ptp.txt")
    assert table.rows == 2 and (table.first, table.last) == ("1996-01-01", "2020-01-01")
    # 2020-06-01: both rows in force; sorted by column 1: 97140 < 97161
    edits = table.edits(["97530", "97161", "97140"], "2020-06-01")
    assert [(e.column1, e.column2, e.modifier, e.effective, e.deletion, e.where) for e in edits] == [
        ("97140", "97530", 1, "2020-01-01", None, "rules/ncci/ptp.txt:5"),
        ("97161", "97140", 0, "1996-01-01", "2021-01-01", "rules/ncci/ptp.txt:6")]
    assert edits[0].rationale == "Misuse of column two code with column one code"
    assert edits[1].rationale == "Mutually exclusive \u2013 procedures"        # byte 0x96 in Windows-1252


def test_ptp_utf8_bom_lf_and_the_contract_header(tmp_path, cache_dir):
    path = write(tmp_path / "ptp.txt", [NOTICE, "", PTP_HEADER,                 # lines 1-3
                                        "97530\t97116\t\t20190101\t*\t9\tStandards of medical / surgical practice"],
                 bom=True)
    assert found(load_ptp(path), ["97116", "97530"], "2019-01-01") == [("97530", "97116", 9, 4)]


@pytest.mark.parametrize("header", [
    PTP_HEADER,
    "COLUMN 1\tCOLUMN 2\tIN EXISTENCE PRIOR TO 1996\tEFFECTIVE DATE\tDELETION DATE\tMODIFIER\tPTP EDIT RATIONALE",
    "Column1\tColumn2\t* = in existence prior to 1996\tEffective  Date\tDeletion Date (*=no data)\tModifier\tRationale",
    # the rationale column is absent (older files): rows without it load with an empty rationale
    "Column 1\tColumn 2\t*=in existence prior to 1996\tEffective Date\tDeletion Date\tModifier",
])
def test_ptp_header_names_vary_between_quarters(tmp_path, cache_dir, header):
    width = header.count("\t") + 1
    row = "\t".join(["97140", "97530", "", "20200101", "*", "1", "Mutually exclusive procedures"][:width])
    table = load_ptp(write(tmp_path / "ptp.txt", [NOTICE, header, row]))
    edits = table.edits(["97140", "97530"], "2024-01-01")
    assert [(e.column1, e.column2, e.line) for e in edits] == [("97140", "97530", 3)]
    assert edits[0].rationale == ("Mutually exclusive procedures" if width == 7 else "")


def test_ptp_header_block_over_four_lines_and_a_blank_deletion_date(tmp_path, cache_dir):
    # the spreadsheet's header block saved as text: names go on down their columns over lines 3-6
    path = write(tmp_path / "ptp.txt", [
        "CPT only copyright 2026 American Medical Association. All rights reserved.",     # line 1
        "Column1/Column2 Edits",                                                         # line 2
        "Column\tColumn\t*=in existence\tEffective\tDeletion\tModifier\tPTP Edit",        # line 3
        "1\t2\tprior to 1996\tDate\tDate\t0=not allowed\tRationale",                      # line 4
        "\t\t\t\t*=no data\t1=allowed\t",                                                # line 5
        "\t\t\t\t\t9=not applicable\t",                                                  # line 6
        "97140\t97530\t\t20200101\t\t1\tMutually exclusive procedures",                   # line 7: blank = in force
        "97530\t97116\t\t20190101\t20200101\t0\tx"], newline="\r\n")                      # line 8
    table = load_ptp(path)
    assert found(table, ["97140", "97530", "97116"], "2099-01-01") == [("97140", "97530", 1, 7)]
    assert table.edits(["97140", "97530"], "2020-01-01")[0].deletion is None
    assert found(table, ["97530", "97116"], "2019-06-01") == [("97530", "97116", 0, 8)]


@pytest.mark.parametrize("lines, message", [
    ([NOTICE, "Column A\tColumn B\tEffective Date"],
     "ptp.txt:2: header: the header names no 'Column 1' and 'Column 2'"),
    ([NOTICE, "Column 1\tColumn 2\tEffective Date\tModifier", "\t\t\t0=not allowed"],     # a header and no rows
     "ptp.txt:2: header: no 'Deletion Date' column in the header (found 'Column 1', 'Column 2', "
     "'Effective Date', 'Modifier 0=not allowed')"),
])
def test_ptp_header_errors_name_the_headers_first_line(tmp_path, cache_dir, lines, message):
    with pytest.raises(TableError) as caught:
        load_ptp(write(tmp_path / "ptp.txt", lines), "ptp.txt")
    assert str(caught.value) == message


def test_ptp_header_with_a_required_column_missing_is_an_error(tmp_path, cache_dir):
    path = write(tmp_path / "ptp.txt", [NOTICE, "Column 1\tColumn 2\tEffective Date\tDeletion Date\tPTP Edit Rationale",
                                        "97140\t97530\t20200101\t*\tx"])
    with pytest.raises(TableError) as caught:
        load_ptp(path, "ptp.txt")
    assert str(caught.value) == ("ptp.txt:2: header: no 'Modifier' column in the header (found 'Column 1', "
                                 "'Column 2', 'Effective Date', 'Deletion Date', 'PTP Edit Rationale')")
    assert isinstance(caught.value, RuleFileError)     # a broken table stops the run like a broken rule file


@pytest.mark.parametrize("lines", [[], [NOTICE], [NOTICE, "97140,97530,,20200101,*,1,x"]])
def test_a_file_without_the_ptp_header_is_an_error(tmp_path, cache_dir, lines):
    with pytest.raises(TableError, match=r"^ptp\.txt: no PTP header \(a line 'Column 1<TAB>Column 2<TAB>\.\.\.'\)"):
        load_ptp(write(tmp_path / "ptp.txt", lines), "ptp.txt")


@pytest.mark.parametrize("row, message", [
    ("9714\t97530\t\t20200101\t*\t1\tx", "Column 1: '9714' is not a HCPCS/CPT code"),
    ("97140\t97-30\t\t20200101\t*\t1\tx", "Column 2: '97-30' is not a HCPCS/CPT code"),
    ("97140\t97530\t\t20200230\t*\t1\tx", "Effective Date: '20200230' is not a date YYYYMMDD"),   # no 30 Feb
    ("97140\t97530\t\t2020-01-01\t*\t1\tx", "Effective Date: '2020-01-01' is not a date YYYYMMDD"),
    ("97140\t97530\t\t*\t*\t1\tx", "Effective Date: '*' is not a date YYYYMMDD"),
    ("97140\t97530\t\t20200101\t-\t1\tx", "Deletion Date: '-' is not a date YYYYMMDD, or * or blank (in force)"),
    ("97140\t97530\t\t20200101\t20191231\t1\tx", "Deletion Date: 2019-12-31 is before the effective date 2020-01-01"),
    ("97140\t97530\t\t20200101\t*\t2\tx", "Modifier: '2' is not 0 (not allowed), 1 (allowed) or 9 (not applicable)"),
    ("\t\t\t20200101\t*\t1\tx", "Column 1: '' is not a HCPCS/CPT code"),    # not a header line after a row
    ("97140\t97530\t\t20200101\t*", "row: expected 6 tab-separated columns, found 5"),
    ("97140 97530  20200101 * 1 x", "row: expected 6 tab-separated columns, found 1"),
])
def test_a_malformed_ptp_row_is_one_error_naming_file_line_and_column(tmp_path, cache_dir, row, message):
    # NOTICE line 1, header 2, a good row 3, a blank line 4, the bad row 5
    path = write(tmp_path / "ptp.txt", [NOTICE, PTP_HEADER, "97110\t97112\t\t20200101\t*\t0\tx", "", row])
    with pytest.raises(TableError) as caught:
        load_ptp(path, "ncci/ptp.txt")
    assert str(caught.value) == f"ncci/ptp.txt:5: {message}"
    assert not list(cache_dir.iterdir())               # nothing cached for a table that did not load


# ---------------------------------------------------------------- PTP lookup

@pytest.fixture
def windows(tmp_path, cache_dir):
    return load_ptp(write(tmp_path / "ptp.txt", [
        NOTICE, PTP_HEADER,
        "97140\t97530\t\t20200101\t20210101\t1\tMutually exclusive procedures",     # line 3
        "97140\t97530\t\t20210101\t*\t0\tMutually exclusive procedures",            # line 4: replaces line 3
        "97110\t97112\t\t20220101\t20220101\t9\tDeleted the day it took effect",    # line 5: never in force
        "97164\t97530\t\t20200101\t*\t9\tStandards of medical / surgical practice",  # line 6
    ]))


@pytest.mark.parametrize("date, expected", [
    ("2019-12-31", []),                                  # before the effective day
    ("2020-01-01", [("97140", "97530", 1, 3)]),          # the effective day is included
    ("2020-12-31", [("97140", "97530", 1, 3)]),          # the last day before the deletion
    ("2021-01-01", [("97140", "97530", 0, 4)]),          # the deletion day is excluded; line 4 starts that day
    (datetime.date(2099, 12, 31), [("97140", "97530", 0, 4)]),   # `*`: in force with no end
])
def test_ptp_date_window_effective_included_deletion_excluded(windows, date, expected):
    assert found(windows, ["97530", "97140"], date) == expected


def test_ptp_modifier_indicators_and_direction(windows):
    assert found(windows, ["97110", "97112"], "2022-01-01") == []      # deletion == effective: never in force
    # 0, 1 and 9 are all reported (9 is "no edit" for the billing code to decide); column 1 is the row's
    assert found(windows, ["97164", "97530", "97140"], "2020-06-01") == [("97140", "97530", 1, 3),
                                                                         ("97164", "97530", 9, 6)]
    assert found(windows, ["97530"], "2020-06-01") == []               # a pair needs both codes
    assert found(windows, ["97530", "97530", "97140"], "2021-06-01") == [("97140", "97530", 0, 4)]


def test_ptp_lookup_decodes_only_the_sessions_codes(windows):
    windows.edits(["97140", "97530"], "2020-06-01")
    assert set(windows._groups) <= {"97140", "97530"}


# ---------------------------------------------------------------- MUE

def test_mue_notice_cell_and_header_cell_with_line_breaks_crlf_bom(tmp_path, cache_dir):
    path = write(tmp_path / "mue.csv", [
        f'"{NOTICE}',                                                             # line 1: the notice cell...
        'All rights reserved.",,,',                                               # line 2: ...ends here
        MUE_HEADER,                                                               # lines 3-4 (break in cell 1)
        '97110,6,"3 Date of Service Edit: Clinical","Clinical: Data"',            # line 5
        '97546,2,"2 Date of Service Edit: Policy",Nature of Service',             # line 6
        '',                                                                       # line 7
        'G0283,1,1 Line Edit,"Code Descriptor / CPT Instruction"',                # line 8
        '', ''], newline="\r\n", bom=True)
    table = load_mue(path, "ncci/mue.csv")
    assert table.rows == 3
    got = {code: (m.value, m.mai, m.rationale, m.where) for code in ("97110", "97546", "G0283")
           for m in [table.lookup(code)]}
    assert got == {"97110": (6, 3, "Clinical: Data", "ncci/mue.csv:5"),
                   "97546": (2, 2, "Nature of Service", "ncci/mue.csv:6"),
                   "G0283": (1, 1, "Code Descriptor / CPT Instruction", "ncci/mue.csv:8")}
    assert table.lookup("97112") is None


@pytest.mark.parametrize("header", [
    MUE_HEADER,
    '"HCPCS/CPT Code","Practitioner MUE Values","Practitioner Services MUE Adjudication Indicator","MUE Rationale"',
    'HCPCS Code,MUE Values,MUE Adjudication Indicator',                       # no rationale column
    '"HCPCS/CPT Code","MUE Rationale","MUE Adjudication Indicator","Practitioner Services MUE Values"',  # reordered
])
def test_mue_header_names_vary_between_quarters(tmp_path, cache_dir, header):
    columns = [c.strip('"') for c in header.split(",")]
    cells = {"HCPCS": "97110", "Rationale": '"Clinical: Data"', "Indicator": '"3 Date of Service Edit: Clinical"',
             "Values": "6"}
    row = ",".join(next(v for k, v in cells.items() if k in c) for c in columns)
    table = load_mue(write(tmp_path / "mue.csv", [f'"{NOTICE}",,,', header, row]))
    value = table.lookup("97110")
    lines = 2 + header.count("\n") + 1                  # notice 1, header 2 (and 3 when it holds a break)
    assert (value.value, value.mai, value.line) == (6, 3, lines)


@pytest.mark.parametrize("text, mai", [("1 Line Edit", 1), ("2 Date of Service Edit: Policy", 2),
                                       ("3 Date of Service Edit: Clinical", 3), ("3", 3), (" 2 ", 2)])
def test_mue_adjudication_indicator_is_read_from_its_text(tmp_path, cache_dir, text, mai):
    table = load_mue(write(tmp_path / "mue.csv", [MUE_HEADER, f'97110,6,"{text}",x']))
    assert table.lookup("97110").mai == mai


@pytest.mark.parametrize("row, message", [
    ('97110,6,"4 Something",x', "MUE Adjudication Indicator: '4 Something' is not '1 Line Edit', "
                                "'2 Date of Service Edit: Policy' or '3 Date of Service Edit: Clinical'"),
    ('97110,6,"12 Line Edit",x', "MUE Adjudication Indicator: '12 Line Edit' is not '1 Line Edit', "
                                 "'2 Date of Service Edit: Policy' or '3 Date of Service Edit: Clinical'"),
    ('97110,six,"1 Line Edit",x', "MUE Values: 'six' is not a number of units"),
    ('97110,-1,"1 Line Edit",x', "MUE Values: '-1' is not a number of units"),
    ('971100,1,"1 Line Edit",x', "HCPCS/CPT Code: '971100' is not a HCPCS/CPT code"),
    ('97112,1,"1 Line Edit",x', "HCPCS/CPT Code: 97112 is also on line 4"),
    ('97110,1', "row: expected 3 comma-separated columns, found 2"),
])
def test_a_malformed_mue_row_is_one_error_naming_file_line_and_column(tmp_path, cache_dir, row, message):
    # notice 1, header 2-3, good row 4, bad row 5
    path = write(tmp_path / "mue.csv", [f'"{NOTICE}",,,', MUE_HEADER, '97112,1,"1 Line Edit",x', row])
    with pytest.raises(TableError) as caught:
        load_mue(path, "mue.csv")
    assert str(caught.value) == f"mue.csv:5: {message}"


def test_mue_header_without_the_indicator_column_is_an_error(tmp_path, cache_dir):
    # the notice cell spans lines 1-2; the header starts on line 3 (its first cell ends on line 4)
    path = write(tmp_path / "mue.csv", [f'"{NOTICE}', 'end",,,',
                                        '"HCPCS/\nCPT Code","Practitioner Services MUE Values"'])
    with pytest.raises(TableError, match=r"^mue\.csv:3: header: no 'MUE Adjudication Indicator' column"):
        load_mue(path, "mue.csv")


def test_a_mue_row_is_traced_to_the_line_it_starts_on(tmp_path, cache_dir):
    path = write(tmp_path / "mue.csv", [MUE_HEADER,                                   # lines 1-2
                                        '97110,6,"3 Date of Service Edit: Clinical","Clinical:',   # line 3...
                                        'Data"',                                                 # ...ends on 4
                                        '97112,2,"1 Line Edit",x',                               # line 5
                                        '97113,x,"1 Line Edit",x'])                              # line 6
    with pytest.raises(TableError, match=r"^mue\.csv:6: MUE Values: 'x' is not a number of units$"):
        load_mue(path, "mue.csv")
    table = load_mue(write(path, [MUE_HEADER, '97110,6,"3 Date of Service Edit: Clinical","Clinical:', 'Data"',
                                  '97112,2,"1 Line Edit",x']), "mue.csv")
    assert [(v.line, v.rationale) for v in map(table.lookup, ["97110", "97112"])] == [(3, "Clinical: Data"),
                                                                                       (5, "x")]


def test_a_missing_table_file_is_an_error(tmp_path, cache_dir):
    with pytest.raises(TableError, match=r"^ncci/none\.csv: cannot read: No such file or directory$"):
        load_mue(tmp_path / "none.csv", "ncci/none.csv")


# ---------------------------------------------------------------- the cache

PTP_ROWS = [NOTICE, PTP_HEADER, "97140\t97530\t\t20200101\t*\t1\tMutually exclusive procedures"]   # row on line 3


@pytest.fixture
def reads(monkeypatch):
    """How many times a table file was read and indexed (not taken from the cache)."""
    count = {"ptp": 0, "mue": 0}
    for kind, (reader, table) in list(tables.READERS.items()):
        def counted(fh, display, reader=reader, kind=kind):
            count[kind] += 1
            return reader(fh, display)
        monkeypatch.setitem(tables.READERS, kind, (counted, table))
    return count


def entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("table-"))


def test_cache_hit_after_the_first_load(tmp_path, cache_dir, reads):
    path = write(tmp_path / "ptp.txt", PTP_ROWS)
    first = load_ptp(path, "a/ptp.txt")
    assert reads["ptp"] == 1 and len(entries(cache_dir)) == 1
    entry = entries(cache_dir)[0]
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    second = load_ptp(path, "b/ptp.txt")            # same bytes under another name: the same entry
    assert reads["ptp"] == 1
    assert first.digest == second.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert found(second, ["97140", "97530"], "2020-01-01") == found(first, ["97140", "97530"], "2020-01-01")
    assert second.edits(["97140", "97530"], "2020-01-01")[0].where == "b/ptp.txt:3"


def test_changed_content_is_a_miss(tmp_path, cache_dir, reads):
    path = write(tmp_path / "ptp.txt", PTP_ROWS)
    load_ptp(path)
    write(path, PTP_ROWS[:2] + ["", "97140\t97530\t\t20200101\t*\t0\tMutually exclusive procedures"])   # line 4
    assert found(load_ptp(path), ["97140", "97530"], "2020-01-01") == [("97140", "97530", 0, 4)]
    assert reads["ptp"] == 2 and len(entries(cache_dir)) == 2


def test_cache_off_writes_nothing(tmp_path, cache_dir, reads, monkeypatch):
    monkeypatch.setenv("PAYRULES_CACHE", "off")
    cache._directory.cache_clear()
    path = write(tmp_path / "ptp.txt", PTP_ROWS)
    load_ptp(path)
    load_ptp(path)
    assert reads["ptp"] == 2 and not entries(cache_dir)


def test_a_directory_others_may_write_is_not_used(tmp_path, cache_dir, reads, capsys):
    path = write(tmp_path / "ptp.txt", PTP_ROWS)
    load_ptp(path)                                      # a good entry...
    cache_dir.chmod(0o777)                              # ...in a folder anyone may now write
    cache._directory.cache_clear()
    assert found(load_ptp(path), ["97140", "97530"], "2020-01-01") == [("97140", "97530", 1, 3)]
    assert reads["ptp"] == 2                            # not taken from there
    assert "not using cache" in capsys.readouterr().err
    write(path, PTP_ROWS + [""])
    load_ptp(path)
    assert len(entries(cache_dir)) == 1                 # nor written to


def test_a_directory_or_an_entry_another_user_owns_is_not_used(tmp_path, cache_dir, reads, capsys):
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    path = write(tmp_path / "ptp.txt", PTP_ROWS)
    load_ptp(path)
    os.chown(entries(cache_dir)[0], 12345, -1)          # the entry: not used, and rewritten as ours
    load_ptp(path)
    assert reads["ptp"] == 2 and entries(cache_dir)[0].stat().st_uid == 0
    os.chown(cache_dir, 12345, -1)                      # the folder: not used at all
    cache._directory.cache_clear()
    load_ptp(path)
    assert reads["ptp"] == 3 and "owned by another user" in capsys.readouterr().err


def test_the_same_table_gives_the_same_entry_bytes(tmp_path, cache_dir, monkeypatch):
    path = write(tmp_path / "ptp.txt", PTP_ROWS + ["97530\t97116\t\t20190101\t20200101\t0\tx",
                                                  "G0283\t97530\t\t20200101\t*\t9\ty"])
    made = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir(mode=0o700)
        monkeypatch.setenv("PAYRULES_CACHE", str(folder))
        cache._directory.cache_clear()
        load_ptp(path, f"{name}/ptp.txt")
        made.append(entries(folder)[0].read_bytes())
    assert made[0] == made[1]


def test_an_entry_others_may_write_is_not_used(tmp_path, cache_dir, reads):
    path = write(tmp_path / "ptp.txt", PTP_ROWS)
    load_ptp(path)
    entries(cache_dir)[0].chmod(0o666)
    load_ptp(path)
    assert reads["ptp"] == 2
    assert stat.S_IMODE(entries(cache_dir)[0].stat().st_mode) == 0o600     # rewritten


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "empty", "sound but not an index", "other kind"])
def test_a_corrupt_entry_is_never_trusted_and_is_rebuilt(tmp_path, cache_dir, reads, damage):
    path = write(tmp_path / "ptp.txt", PTP_ROWS)
    load_ptp(path)
    entry = entries(cache_dir)[0]
    data = entry.read_bytes()
    if damage == "flip a byte":         # the last record's line number: 3 would become another line
        data = data[:-2] + bytes([data[-2] ^ 0x01]) + data[-1:]
    elif damage == "truncate":
        data = data[:-5]
    elif damage == "empty":
        data = b""
    elif damage == "sound but not an index":        # carries a matching sha256, but is not an index
        data = tables._seal(b"\x00\x00\x00\x02{}")
    else:                                           # a sound MUE index under this PTP file's name
        mue = write(tmp_path / "mue.csv", [MUE_HEADER, '97110,6,"3 Date of Service Edit: Clinical",x'])
        load_mue(mue)
        data = next(p for p in entries(cache_dir) if p.name.startswith("table-mue")).read_bytes()
    entry.write_bytes(data)
    assert found(load_ptp(path), ["97140", "97530"], "2020-01-01") == [("97140", "97530", 1, 3)]
    assert reads["ptp"] == 2
    assert tables._sound(entry.read_bytes()) and entry.read_bytes() != data          # rewritten whole
    load_ptp(path)
    assert reads["ptp"] == 2                                                          # and used again


def test_a_new_reader_never_uses_an_old_entry_and_removes_it(tmp_path, cache_dir, reads, monkeypatch):
    path = write(tmp_path / "ptp.txt", PTP_ROWS)
    load_ptp(path)
    mue = write(tmp_path / "mue.csv", [MUE_HEADER, '97110,6,"3 Date of Service Edit: Clinical",x'])
    load_mue(mue)
    (cache_dir / "rules-0123456789abcdef-00.json").write_text("{}")       # the rule cache's: not touched
    old = entries(cache_dir)
    monkeypatch.setattr(tables, "_salt", lambda: "0" * 16)          # as a new version of this module would
    load_ptp(path)
    assert reads["ptp"] == 2
    assert [p.name for p in entries(cache_dir)] == [f"table-ptp-{'0' * 16}-{old[1].name.split('-')[-1]}"]
    assert (cache_dir / "rules-0123456789abcdef-00.json").exists()


# ---------------------------------------------------------------- differential: index against a scan

CODES = ["97110", "97112", "97140", "97530", "97161", "G0283"]
DATES = [20191231, 20200101, 20200102, 20200630, 20201231, 20210101, 20220101]


def iso(day: int) -> str:
    return f"{day // 10000}-{day // 100 % 100:02d}-{day % 100:02d}"


ptp_rows = st.lists(st.tuples(st.sampled_from(CODES), st.sampled_from(CODES), st.sampled_from(DATES),
                              st.one_of(st.none(), st.sampled_from(DATES)), st.sampled_from([0, 1, 9]),
                              st.sampled_from(["Mutually exclusive procedures", "", "Misuse of column two code"])),
                    max_size=25)
PTP_HEADERS = [[PTP_HEADER], [PTP_HEADER, "\t\t\t\t*=no data\t1=allowed\t"],
               ["Column\tColumn\t*=in existence\tEffective\tDeletion\tModifier\tPTP Edit",
                "1\t2\tprior to 1996\tDate\tDate\t0=not allowed\tRationale", "", "\t\t\t\t*=no data\t1=allowed\t"]]
layouts = st.fixed_dictionaries({"newline": st.sampled_from(["\n", "\r\n"]), "bom": st.booleans(),
                                 "preamble": st.integers(0, 3), "header": st.sampled_from(PTP_HEADERS),
                                 "in_force": st.sampled_from(["*", ""]),
                                 "blanks": st.lists(st.booleans(), min_size=30, max_size=30),
                                 "trailing": st.integers(0, 3)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ptp_rows, layout=layouts,
       queries=st.lists(st.tuples(st.lists(st.sampled_from(CODES), max_size=6), st.sampled_from(DATES)),
                        min_size=1, max_size=8))
def test_ptp_index_cold_and_cached_equals_a_scan_of_the_rows(tmp_path, monkeypatch, rows, layout, queries):
    rows = [(c1, c2, eff, max(eff, dele) if dele else None, mod, why) for c1, c2, eff, dele, mod, why in rows]
    lines = [f"{NOTICE} ({n})" for n in range(layout["preamble"])] + layout["header"]
    at = []                                 # the physical line of each row, counted as it is written
    for n, (c1, c2, eff, dele, mod, why) in enumerate(rows):
        if layout["blanks"][n]:
            lines.append("" if n % 2 else "\t\t")
        lines.append(f"{c1}\t{c2}\t\t{eff}\t{dele or layout['in_force']}\t{mod}\t{why}")
        at.append(len(lines))
    lines += [""] * layout["trailing"]
    folder = Path(tempfile.mkdtemp(dir=tmp_path))       # a fresh cache for each example: the first load is cold
    path = write(folder / "ptp.txt", lines, layout["newline"], layout["bom"])
    monkeypatch.setenv("PAYRULES_CACHE", str(folder / "cache"))
    cache._directory.cache_clear()
    try:
        cold = load_ptp(path, "ptp.txt")
        assert len(entries(folder / "cache")) == 1
        cached = load_ptp(path, "ptp.txt")
        assert isinstance(cached._buffer, mmap.mmap)      # really read back from the entry
    finally:
        cache._directory.cache_clear()
    assert cold.rows == cached.rows == len(rows)
    for codes, day in queries:
        scan = sorted((c1, c2, line, eff, dele, mod, why) for (c1, c2, eff, dele, mod, why), line in zip(rows, at)
                      if c1 in codes and c2 in codes and c1 != c2 and eff <= day < (dele or 99999999))
        expected = [tables.PtpEdit(c1, c2, iso(eff), iso(dele) if dele else None, mod, why, "ptp.txt", line)
                    for c1, c2, line, eff, dele, mod, why in scan]
        assert cold.edits(codes, iso(day)) == expected
        assert cached.edits(codes, iso(day)) == expected


mue_rows = st.dictionaries(st.sampled_from(CODES + ["0001U", "97546"]),
                           st.tuples(st.integers(0, 99), st.sampled_from([1, 2, 3]), st.sampled_from(["x", "", "a,b"])),
                           max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=mue_rows, layout=layouts)
def test_mue_index_cold_and_cached_equals_the_rows(tmp_path, monkeypatch, rows, layout):
    mai_text = {1: "1 Line Edit", 2: "2 Date of Service Edit: Policy", 3: "3 Date of Service Edit: Clinical"}
    lines = [f'"{NOTICE}'] + ["more notice"] * layout["preamble"] + ['end",,,', MUE_HEADER]
    at = {}
    for n, (code, (value, mai, why)) in enumerate(rows.items()):
        if layout["blanks"][n]:
            lines.append("" if n % 2 else ",,,")
        lines.append(f'{code},{value},"{mai_text[mai]}","{why}"')
        at[code] = len(lines) + 1           # MUE_HEADER holds a line break: one line more than the list
    lines += [""] * layout["trailing"]
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path = write(folder / "mue.csv", lines, layout["newline"], layout["bom"])
    monkeypatch.setenv("PAYRULES_CACHE", str(folder / "cache"))
    cache._directory.cache_clear()
    try:
        loaded = [load_mue(path, "mue.csv"), load_mue(path, "mue.csv")]
        assert isinstance(loaded[1]._buffer, mmap.mmap)     # really read back from the entry
    finally:
        cache._directory.cache_clear()
    for table in loaded:
        assert table.rows == len(rows)
        for code in CODES + ["0001U", "97546"]:
            expected = (tables.MueValue(code, *rows[code], "mue.csv", at[code]) if code in rows else None)
            assert table.lookup(code) == expected


# ---------------------------------------------------------------- fuzz: any damage is a TableError or a table

GOOD_PTP = "\n".join([NOTICE, PTP_HEADER, "\t\t\t\t*=no data\t\t", "97140\t97530\t\t20200101\t*\t1\tMutually exclusive",
                      "97161\t97140\t*\t19960101\t20210101\t0\tx", "", ""]).encode()
GOOD_MUE = "\r\n".join([f'"{NOTICE}', 'end",,,', MUE_HEADER, '97110,6,"3 Date of Service Edit: Clinical",x',
                        '97546,2,"2 Date of Service Edit: Policy","a, b"', ""]).encode()
damage = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 3),
                            st.sampled_from([b"", b"\t", b"\r", b"\n", b"\r\n", b'"', b",", b"*", b"0", b"9", b"X",
                                             b" ", b"\xff", b"\xef\xbb\xbf", b"\xe2\x80\x99", b"\x00", b"20201231"])),
                  min_size=1, max_size=4)


def damaged(text: bytes, edits) -> bytes:
    for at, cut, put in edits:
        at %= len(text) + 1
        text = text[:at] + put + text[at + cut:]
    return text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["ptp", "mue"]), edits=damage)
def test_a_damaged_table_loads_or_is_one_table_error(tmp_path, cache_dir, kind, edits):
    path = tmp_path / f"t.{kind}"
    path.write_bytes(damaged(GOOD_PTP if kind == "ptp" else GOOD_MUE, edits))
    try:
        table = (load_ptp if kind == "ptp" else load_mue)(path, "t")
    except TableError as exc:
        text = str(exc)
        assert text.startswith("t:") and "\n" not in text          # one line: the CLI prints `error: ` + it
        return
    assert table.rows >= 0 and table.path == "t"
    if kind == "ptp":
        table.edits(["97140", "97530", "97161"], "2020-06-01")
    else:
        table.lookup("97110")


def test_a_line_longer_than_a_read_chunk_is_an_error_not_the_whole_file_in_memory(tmp_path, cache_dir):
    path = tmp_path / "ptp.txt"
    path.write_bytes(f"{NOTICE}\n{PTP_HEADER}\n".encode() + b"9" * (tables.CHUNK + 10))     # line 3 never ends
    with pytest.raises(TableError, match=rf"^ptp\.txt:3: a line longer than {tables.CHUNK} bytes: not a text table$"):
        load_ptp(path, "ptp.txt")


@pytest.mark.parametrize("cells", [["x" * 10_000], [f"extra {n}" for n in range(500)]])
def test_a_header_error_is_one_short_line_whatever_the_header_holds(tmp_path, cells):
    """A header naming the code and value columns but no MAI: the error names the file, line and field and
    stays one short line, however long its cells or however many (each quoted to 40 characters, at most 10
    listed). Before, every cell was listed whole: a 10,000-character cell made a 10 KB message."""
    from engine.tables import TableError, load_mue
    path = tmp_path / "m.csv"
    path.write_text("HCPCS/CPT Code,Practitioner Services MUE Values," + ",".join(cells) + "\n97110,4,1 Line Edit\n")
    with pytest.raises(TableError) as caught:
        load_mue(path, "m.csv")
    message = str(caught.value)
    assert message.startswith("m.csv:1: header: no ") and len(message) < 400 and "\n" not in message
