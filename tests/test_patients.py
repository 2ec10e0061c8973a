"""Sessions with patient_id: billed per patient in date order, written in input order; --jobs by patient;
the same-day edits across a patient's sessions (issue 13 items 4 and 5; engine/patients.py).

The MUE tables here are SYNTHETIC (made-up values for real therapy codes, not CMS data); the PTP pair is the
bundled excerpt's 97140 (column 1) / 97530 (column 2), modifier indicator 1 (rules/ncci, docs/domain.md §17).
Units are worked by the 8-minute rule (docs/domain.md): 30 minutes of one code alone = 2 units, 38 = 3.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import patients as P
from engine.batch import Job, bill_stream
from engine.loader import Registry
from engine.sessions import RawLine
from test_batch import ROOT, err_text, run_cli
from test_edits import mue_file

DAY = "2026-03-05"


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    """A payer extending medicare (its PTP excerpt) with an MUE table: 97110 MAI 2 value 4, 97112 MAI 3
    value 4, 97140 MAI 1 value 4."""
    root = tmp_path_factory.mktemp("rules")
    mue_file(root / "mue.csv", [("97110", 4, 2), ("97112", 4, 3), ("97140", 4, 1)])
    (root / "clinic.yaml").write_text("payer: clinic\nname: Clinic\nextends: medicare\ntables:\n  mue: [mue.csv]\n")
    return root


@pytest.fixture(scope="module")
def registry(clinic):
    return Registry([clinic])


def session(sid, codes, patient="P1", date=DAY, payer="clinic", **extra) -> dict:
    services = [{"code": c, "minutes": m, **({"modifiers": list(mods)} if mods else {})} for c, m, *mods in codes]
    data = {"session_id": sid, "payer": payer, "discipline": "PT", "services": services, **extra}
    if patient:
        data["patient_id"] = patient
    if date:
        data["date_of_service"] = date
    return data


def bill(docs, registry, jobs=1, year_factory=P.patient_year) -> list:
    """The records (dicts) of `docs` as JSONL lines through bill_in_order, in the order written."""
    items = (RawLine((json.dumps(d).encode(), "t.jsonl", i, i)) for i, d in enumerate(docs, 1))
    return [json.loads(done[1]) for _, done in P.bill_in_order(items, [], "python", Job(), jobs, registry, year_factory)]


def edits_named(record, rule):
    return [(w["severity"], w["codes"], w["message"]) for w in record["warnings"] if w["rule"] == rule]


# --- same-day edits across sessions (issue 13 item 4) -----------------------------------------------------

@pytest.mark.parametrize("mai", [2, 3])
def test_mue_per_date_counts_two_sessions_of_one_day_on_the_later_session(registry, mai):
    code = {2: "97110", 3: "97112"}[mai]
    # S-AM 38 min = 3 units, S-PM 30 min = 2 units: each alone <= 4, together 5 > 4 (MUE 4, MAI 2/3)
    docs = [session("S-PM", [(code, 30)]), session("S-AM", [(code, 38)])]     # input order does not matter
    pm, am = bill(docs, registry)
    assert [pm["session_id"], am["session_id"]] == ["S-PM", "S-AM"]          # written in input order
    assert edits_named(am, "ncci-mue") == []
    [(severity, codes, message)] = edits_named(pm, "ncci-mue")
    assert (severity, codes) == ("error", [code])
    assert "5 units on the date of service with session S-AM (3)" in message and f"MAI {mai}" in message


def test_mue_per_line_and_other_days_and_other_patients_are_not_added_up(registry):
    docs = [session("A", [("97140", 38)]), session("B", [("97140", 30)]),       # MAI 1: per line, 3 and 2
            session("C", [("97110", 38)]), session("D", [("97110", 30)], date="2026-03-06"),    # other day
            session("E", [("97110", 30)], patient="P2")]                                        # other patient
    assert all(edits_named(r, "ncci-mue") == [] for r in bill(docs, registry))


def test_mue_without_patient_id_stays_per_session(registry):
    docs = [session("S-AM", [("97110", 38)], patient=None), session("S-PM", [("97110", 30)], patient=None)]
    assert all(edits_named(r, "ncci-mue") == [] for r in bill(docs, registry))


def test_ptp_pair_across_two_sessions_of_one_day_names_the_other_session(registry):
    # 97140 (column 1) in S-AM, 97530 (column 2) in S-PM: indicator 1, no 59/X documented -> an error on S-PM
    am, pm = bill([session("S-AM", [("97140", 30)]), session("S-PM", [("97530", 30)])], registry)
    assert edits_named(am, "ncci-ptp") == []
    [(severity, codes, message)] = edits_named(pm, "ncci-ptp")
    assert (severity, codes) == ("error", ["97530", "97140"])
    assert message.startswith("97530 of this session with 97140 of session S-AM (the same date of service)")
    # the column 2 code in the earlier session: still said on the later one, naming the earlier
    am, pm = bill([session("S-AM", [("97530", 30)]), session("S-PM", [("97140", 30)])], registry)
    [(severity, codes, message)] = edits_named(pm, "ncci-ptp")
    assert severity == "error" and message.startswith("97530 of session S-AM with 97140 of this session")
    # 59 documented on 97530: the bypass is an info
    am, pm = bill([session("S-AM", [("97140", 30)]), session("S-PM", [("97530", 30, "59")])], registry)
    assert [(s, c) for s, c, _ in edits_named(pm, "ncci-ptp")] == [("info", ["97530", "97140"])]
    # other dates: no edit
    records = bill([session("S-AM", [("97140", 30)]), session("S-PM", [("97530", 30)], date="2026-03-06")], registry)
    assert all(edits_named(r, "ncci-ptp") == [] for r in records)


def test_a_pair_already_in_one_session_is_not_said_again(registry):
    # S-AM has both codes (its own edit); S-PM's 97530 is with S-AM's 97140: one more error, on S-PM only
    am, pm = bill([session("S-AM", [("97140", 30), ("97530", 30)]), session("S-PM", [("97530", 30)])], registry)
    assert len(edits_named(am, "ncci-ptp")) == 1 and "of session" not in edits_named(am, "ncci-ptp")[0][2]
    assert len(edits_named(pm, "ncci-ptp")) == 1 and "S-AM" in edits_named(pm, "ncci-ptp")[0][2]


# --- order: date order per patient, input order out ---------------------------------------------------------

class Recorder:
    """A patient's year for the test: records the order it sees sessions in, and marks each result."""
    seen: list = []

    def __init__(self, resolve, patient):
        self.patient, self.count = patient, 0

    def apply(self, session, result, date=None):
        Recorder.seen.append((self.patient, session.date_of_service, session.session_id))
        self.count += 1
        result["warnings"].append({"severity": "info", "rule": "year", "message": f"visit {self.count}", "codes": []})
        return result

    def snapshot(self):
        return self.count


def test_the_year_hook_sees_a_patients_sessions_in_date_order_and_its_result_is_written(registry):
    docs = [session("c", [("97110", 30)], date="2026-05-01"), session("z", [("97110", 30)], patient="P2"),
            session("b", [("97110", 30)], date="2026-02-01"), session("n", [("97110", 30)], date=None),
            session("a", [("97110", 30)], date="2026-05-01"), session("x", [("97110", 30)], patient=None)]
    Recorder.seen = []
    records = bill(docs, registry, year_factory=Recorder)
    assert [r["session_id"] for r in records] == ["c", "z", "b", "n", "a", "x"]
    # P1: by date (same date: by session id), the undated last; P2 alone; no patient: no year
    assert Recorder.seen == [("P1", "2026-02-01", "b"), ("P1", DAY.replace("03-05", "05-01"), "a"),
                             ("P1", "2026-05-01", "c"), ("P1", None, "n"), ("P2", DAY, "z")]
    visits = {r["session_id"]: [w["message"] for w in r["warnings"] if w["rule"] == "year"] for r in records}
    assert visits == {"b": ["visit 1"], "a": ["visit 2"], "c": ["visit 3"], "n": ["visit 4"], "z": ["visit 1"], "x": []}


CODES = ["97110", "97112", "97140", "97530"]
sessions_strategy = st.lists(
    st.tuples(st.sampled_from(["P1", "P2", "P3", None]), st.sampled_from([DAY, "2026-03-06", None]),
              st.lists(st.tuples(st.sampled_from(CODES), st.integers(0, 60), st.sampled_from([(), ("59",)])),
                       min_size=1, max_size=3)),
    min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sessions=sessions_strategy, seed=st.integers(0, 2**32))
def test_any_permutation_gives_each_session_the_same_record_in_input_order(registry, sessions, seed):
    docs = [session(f"S{k}", [(c, m, *mods) for c, m, mods in services], patient=p, date=d)
            for k, (p, d, services) in enumerate(sessions)]
    shuffled = docs[:]
    random.Random(seed).shuffle(shuffled)
    first, second = bill(docs, registry), bill(shuffled, registry, jobs=1)
    assert [r["session_id"] for r in second] == [d["session_id"] for d in shuffled]
    assert {r["session_id"]: r for r in first} == {r["session_id"]: r for r in second}


def test_spool_is_an_external_sort_with_bounded_memory():
    spool, rnd, peak = P.Spool(limit=4096), random.Random(5), 0
    records = [(rnd.choice("abc"), rnd.random(), k, bytes(rnd.randrange(50))) for k in range(3000)]
    for record in records:
        spool.add(record)
        peak = max(peak, len(spool.buffer))
    assert len(spool.runs) > 10 and peak * 100 <= 4096 + 200     # each record counts >= 100 bytes
    assert list(spool) == sorted(records)
    spool.close()


# --- the command line ----------------------------------------------------------------------------------------

def mixed_docs(n=120, seed=3) -> list:
    rnd = random.Random(seed)
    docs = [session(f"S{k}", [(rnd.choice(CODES), rnd.randint(5, 45)) for _ in range(rnd.randint(1, 3))],
                    patient=rnd.choice(["P1", "P2", "P3", "P4", None]),
                    date=rnd.choice(["2026-01-02", "2026-01-03", "2026-02-01"]))
            for k in range(n)]
    rnd.shuffle(docs)
    return docs


def write_jsonl(path, docs, bad_at=()):
    lines = [json.dumps(d) for d in docs]
    for k in bad_at:
        lines[k] = lines[k].replace('"minutes": ', '"minutes": -', 1)       # a schema error in its place
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_jobs_2_equals_jobs_1_on_shuffled_input_and_stdin_too(clinic, tmp_path):
    docs = mixed_docs()
    path = write_jsonl(tmp_path / "in.jsonl", docs)
    one = run_cli("bill", path, "--rules", clinic, "--format", "jsonl")
    two = run_cli("bill", path, "--rules", clinic, "--format", "jsonl", "--jobs", "2")
    piped = run_cli("bill", "-", "--rules", clinic, "--format", "jsonl", "--jobs", "2", stdin=path.read_bytes())
    assert one.stdout == two.stdout == piped.stdout and one.returncode == two.returncode
    records = [json.loads(line) for line in one.stdout.splitlines()]
    assert [r["session_id"] for r in records] == [d["session_id"] for d in docs]
    # the same-day edits did happen somewhere in this input (else the test proves little)
    assert any("of session" in w["message"] for r in records for w in r["warnings"])


def test_a_bad_record_among_patient_sessions_keeps_its_place_and_the_counts_add_up(clinic, tmp_path):
    docs = mixed_docs(40, seed=9)
    bad = [k for k, d in enumerate(docs) if "patient_id" in d][:2]
    path = write_jsonl(tmp_path / "in.jsonl", docs, bad_at=bad)
    proc = run_cli("bill", path, "--rules", clinic, "--format", "jsonl", "--jobs", "2")
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["session_id"] for r in records] == [d["session_id"] for d in docs]
    assert all("error" in records[k] and f"in.jsonl:{k + 1}:" in records[k]["error"] for k in bad)
    assert proc.returncode == 1
    billed = sum("error" not in r and all(w["severity"] != "error" for w in r["warnings"]) for r in records)
    # a schema error is a session "with errors" (not "failed to parse": its JSON was read)
    assert f"40 sessions read: {billed} billed, {40 - billed} with errors, 0 failed to parse" in err_text(proc)


def test_sessions_without_patient_id_are_byte_identical_to_the_streaming_path(clinic, tmp_path):
    docs = [{k: v for k, v in d.items() if k != "patient_id"} for d in mixed_docs(60, seed=4)]
    path = write_jsonl(tmp_path / "in.jsonl", docs)
    proc = run_cli("bill", path, "--rules", clinic, "--format", "jsonl")
    raw = (RawLine((line, str(path), i, i)) for i, line in enumerate(path.read_bytes().splitlines(), 1))
    direct = b"".join(done[1] for _, done in bill_stream(raw, [clinic], "python", Job(), 1, Registry([clinic])))
    assert proc.stdout == direct


@pytest.mark.parametrize("spool, bounded", [(1 << 20, True), (1 << 30, False)])
def test_patient_sessions_are_spooled_in_bounded_memory(clinic, tmp_path, spool, bounded):
    """30,000 patient sessions of 3,000 patients, shuffled, through the CLI with 1 MB spool buffers: the
    peak RSS stays within that of a run of 1,000 sessions plus a margin (holding 30,000 records of ~1.5 KB and
    their sessions would add ~60 MB). The 1,000,000-session run is in benchmarks/patients_bench.py."""
    def peak(n):
        rnd = random.Random(n)
        lines = [json.dumps(session(f"S{k}", [("97110", 30), ("97112", 20), ("97530", 10)], patient=f"P{rnd.randrange(n // 10)}",
                                    date=f"2026-{rnd.randint(1, 12):02}-{rnd.randint(1, 28):02}", payer="medicare"))
                 for k in range(n)]
        path = tmp_path / f"{n}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        code = (f"import sys; import engine.patients as P; P.SPOOL_BYTES = {spool}; "
                f"sys.argv = ['payrules', 'bill', {str(path)!r}, '--format', 'jsonl']; "
                "import engine.cli; code = engine.cli.main(sys.argv[1:]); sys.stdout.flush(); "
                "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0], file=sys.stderr)")
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=300)
        assert proc.stdout.count(b"\n") == n
        # VmHWM, the peak RSS of this process (ru_maxrss would count pytest's, kept across the exec)
        return int(proc.stderr.decode().split()[-1])       # KiB
    small, large = peak(1000), peak(30_000)
    # the check of the check: with spool buffers larger than the input, the same run holds every record
    assert (large - small < 25 * 1024) == bounded, (small, large)


def test_a_spool_that_cannot_be_written_stops_the_run_with_one_error_line(tmp_path):
    """A full disk under TMPDIR: the records written before stay, well-formed; one error line; exit 2."""
    docs = [session("S0", [("97110", 30)], patient=None, payer="medicare")] + \
           [session(f"S{k}", [("97110", 30)], patient=f"P{k % 7}", payer="medicare") for k in range(1, 200)]
    path = write_jsonl(tmp_path / "in.jsonl", docs)
    code = ("import errno, sys, tempfile; import engine.patients as P; P.SPOOL_BYTES = 4096\n"
            "def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')\n"
            "tempfile.TemporaryFile = full\n"
            f"from engine.cli import main; sys.exit(main(['bill', {str(path)!r}, '--format', 'json']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == 2
    assert [r["session_id"] for r in json.loads(proc.stdout)] == ["S0"]        # closed with `]` after S0
    errors = [line for line in err_text(proc).splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write the temporary spool in {tempfile.gettempdir()}: No space left on "
                      "device; free some space or set TMPDIR"]
    assert "payrules: 1 session read: 1 billed, 0 with errors, 0 failed to parse" in err_text(proc)


def test_a_shard_is_the_unit_of_work_any_partition_by_patient_gives_the_same_records(registry):
    """bill_shard on each patient alone, or on all of them together, gives each session the same record: what
    lets --jobs (or a distributed engine) split the sorted spool at any patient boundary."""
    from engine.billing import Biller
    docs = mixed_docs(60, seed=11)
    spool = P.Spool()
    for place, doc in enumerate(docs):
        item = RawLine((json.dumps(doc).encode(), "t.jsonl", place + 1, place + 1))
        key = P.patient_key(item, None)
        if key:
            spool.add((*key, place, P.pickle.dumps(item)))
    rows = list(spool)
    biller = Biller(registry, "python")
    whole = dict(P.bill_shard(rows, biller, Job()))
    apart = {}
    for patient in sorted({row[0] for row in rows}):
        apart.update(P.bill_shard([row for row in rows if row[0] == patient], biller, Job()))
    biller.close()
    assert len(whole) == len(rows) > 40 and whole == apart


def test_a_numeric_patient_id_and_a_csv_patient_id_take_the_patient_path(tmp_path):
    # A session reads patient_id 77 as "77" and a CSV column patient_id like a session field; both must
    # be billed as the patient's, in date order. Two sessions of one patient on one date: 97140 in the
    # first (by session id, A before B), 97530 in the second: the NCCI pair (medicare's excerpt, indicator
    # 1, no 59) is said on B, naming A. Given B first in the input, the output keeps input order.
    import subprocess
    import sys as _sys
    jsonl = tmp_path / "day.jsonl"
    jsonl.write_text("".join(json.dumps(s) + "\n" for s in [
        {"session_id": "B", "payer": "medicare", "date_of_service": DAY, "discipline": "PT", "patient_id": 77,
         "services": [{"code": "97530", "minutes": 23}]},
        {"session_id": "A", "payer": "medicare", "date_of_service": DAY, "discipline": "PT", "patient_id": 77,
         "services": [{"code": "97140", "minutes": 23}]}]))
    csv = tmp_path / "day.csv"
    csv.write_text("session_id,payer,date_of_service,discipline,patient_id,code,minutes\n"
                   f"B,medicare,{DAY},PT,P-1,97530,23\nA,medicare,{DAY},PT,P-1,97140,23\n")
    for path in (jsonl, csv):
        proc = subprocess.run([_sys.executable, "-m", "engine", "bill", str(path), "--format", "jsonl"],
                              capture_output=True, text=True, cwd=ROOT)
        out = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [r["session_id"] for r in out] == ["B", "A"], proc.stderr
        said = [w["message"] for w in out[0]["warnings"] if w["rule"] == "ncci-ptp"]
        assert any("session A" in m for m in said), (path.name, out[0]["warnings"])


def test_a_placeholder_patient_on_many_sessions_of_one_date_stays_linear(tmp_path):
    """30 sessions of one patient id ("UNKNOWN") on one date, alternately 97140 and 97530 (Medicare's PTP
    excerpt: 97140 column 1, 97530 column 2, indicator 1, no 59 documented). Each session's edits across the
    day look at the first SAME_DAY (12) earlier sessions only, so a session has at most 12 such errors (the
    k-th had k - 1: 435 in all, and with thousands of sessions hours and gigabytes); sessions 14 to 30 have
    13 to 29 earlier ones and say so (engine.same-day). audit --replay reproduces every session."""
    assert P.SAME_DAY == 12
    path = tmp_path / "day.jsonl"
    path.write_text("".join(json.dumps({"session_id": f"s{k:02d}", "payer": "medicare", "patient_id": "UNKNOWN",
                                        "date_of_service": "2026-03-02", "discipline": "PT",
                                        "services": [{"code": "97140" if k % 2 else "97530", "minutes": 15}]}) + "\n"
                        for k in range(30, 0, -1)))
    db = tmp_path / "log.db"
    proc = run_cli("bill", path, "--format", "jsonl", "--audit-db", db)
    records = {r["session_id"]: r for r in map(json.loads, proc.stdout.decode().splitlines())}
    across = {sid: [w for w in r["warnings"] if w["rule"] == "ncci-ptp"] for sid, r in records.items()}
    said = {sid for sid, r in records.items() if any(w["rule"] == "engine.same-day" for w in r["warnings"])}
    assert max(map(len, across.values())) == 6     # s13..s30: 6 of their 12 looked-at sessions have the other code
    assert said == {f"s{k:02d}" for k in range(14, 31)}
    assert "29 earlier sessions" in next(w["message"] for w in records["s30"]["warnings"]
                                         if w["rule"] == "engine.same-day")
    replay = run_cli("audit", db, "--replay")
    assert replay.returncode == 0 and b"30 reproduced, 0 differ" in replay.stdout, replay.stdout
