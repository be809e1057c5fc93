"""kvm-drivers check without the lab: the real CLI in a subprocess, hosts from tests/fake_connector.py.

Every way a host can fail to be checked must end in a non-zero exit code and a row for that host.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_connector import ROOT, run_cli


def inventory(tmp_path: Path, hosts: dict[str, dict], groups: dict[str, list[str]] | None = None) -> str:
    """An inventory file of @fake hosts (name -> data), in that order, plus optional groups."""
    lines = ["hosts = ["] + [f"    ('@fake/{n}', {d!r})," for n, d in hosts.items()] + ["]"]
    for group, names in (groups or {}).items():
        lines.append(f"{group} = [h for h in hosts if h[0][6:] in {names!r}]")
    path = tmp_path / "inv.py"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def rows_of(path: Path) -> dict[str, dict]:
    return {h["host"]: h for h in json.loads(path.read_text())["hosts"]}


def test_all_compliant_exits_0(tmp_path):
    inv = inventory(tmp_path, {"a": {"fake": "compliant"}, "b": {"fake": "compliant"}})
    run = run_cli("check", inv, "--report", str(tmp_path / "r.json"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[-1] == "2 hosts: 2 compliant"
    assert {r["status"] for r in rows_of(tmp_path / "r.json").values()} == {"compliant"}


def test_drifted_exits_2_and_quiet_prints_only_problems(tmp_path):
    inv = inventory(tmp_path, {"ok": {"fake": "compliant"}, "old": {"fake": "drifted"}})
    run = run_cli("check", inv, "--quiet")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "old" in run.stdout and "virtio_blk" in run.stdout
    assert " ok " not in run.stdout and "COMPLIANT" not in run.stdout
    assert run_cli("check", inv, "--quiet", "--limit", "ok").stdout == ""  # nothing to say when all is well


@pytest.mark.parametrize("kind, expected", [
    ("raise", "RuntimeError: fake connector exploded"),
    ("hang", "timed out after 2 s"),
    ("fail", "the state gathering command failed: sh: 1: gather: Permission denied"),
    ("noconnect", "unreachable: Could not connect"),
    ("prompt", "would have prompted 'sudo password:'"),
])  # fmt: skip
def test_a_host_not_checked_is_an_error_whatever_happened(tmp_path, kind, expected):
    inv = inventory(tmp_path, {"good": {"fake": "compliant"}, "bad": {"fake": kind}})
    run = run_cli("check", inv, "--timeout", "2", "--report", str(tmp_path / "r.json"))
    assert run.returncode == 4, run.stdout + run.stderr
    rows = rows_of(tmp_path / "r.json")
    assert rows["good"]["status"] == "compliant"
    assert rows["bad"]["status"] == "error" and expected in rows["bad"]["errors"][0], rows["bad"]
    assert expected in run.stdout


def test_output_cut_short_is_never_compliant(tmp_path):
    inv = inventory(tmp_path, {"cut": {"fake": "cut"}})
    run = run_cli("check", inv, "--report", str(tmp_path / "r.json"))
    assert run.returncode not in (0, 2), run.stdout
    assert any("did not finish" in e for e in rows_of(tmp_path / "r.json")["cut"]["errors"])


@pytest.mark.parametrize("order", ["failing host first", "failing host last"])
def test_the_host_finishing_last_does_not_decide(tmp_path, order):
    # The hanging host is the last to finish (at its time limit); the others answered long before.
    hosts = {f"ok{i}": {"fake": "compliant"} for i in range(5)}
    slow = {"slow": {"fake": "hang"}}
    inv = inventory(tmp_path, {**slow, **hosts} if order == "failing host first" else {**hosts, **slow})
    run = run_cli("check", inv, "--timeout", "2", "--report", str(tmp_path / "r.json"))
    assert run.returncode == 4, run.stdout + run.stderr
    rows = rows_of(tmp_path / "r.json")
    assert len(rows) == 6 and rows["slow"]["status"] == "error"
    # and the other way round: a failing host that finishes first, compliant ones after it
    inv = inventory(tmp_path, {"gone": {"fake": "noconnect"}, **hosts})
    assert run_cli("check", inv).returncode == 4


def test_each_host_gets_its_own_data(tmp_path):
    inv = inventory(tmp_path, {"plain": {"fake": "compliant"},
                               "ata": {"fake": "compliant", "kvm_drivers": ["ata_piix"]}})  # fmt: skip
    run = run_cli("check", inv, "--report", str(tmp_path / "r.json"))
    rows = rows_of(tmp_path / "r.json")
    assert rows["plain"]["status"] == "compliant"
    assert rows["ata"]["status"] == "drifted" and "ata_piix" in rows["ata"]["not_declared"]
    assert run.returncode == 2
    # --data overrides every host's data, as pyinfra's does
    assert run_cli("check", inv, "--data", "fake=hang", "--timeout", "1").returncode == 4


def test_limit_by_group_and_glob(tmp_path):
    inv = inventory(tmp_path, {"web1": {"fake": "compliant"}, "web2": {"fake": "compliant"},
                               "db1": {"fake": "drifted"}}, groups={"webs": ["web1", "web2"]})  # fmt: skip
    assert run_cli("check", inv, "--limit", "webs").returncode == 0
    assert run_cli("check", inv, "--limit", "web*").returncode == 0
    run = run_cli("check", inv, "--limit", "web1", "--limit", "db*")
    assert run.returncode == 2 and run.stdout.splitlines()[-1] == "2 hosts: 1 compliant, 1 drifted"


def test_limit_matching_nothing_exits_6_without_prompting(tmp_path):
    inv = inventory(tmp_path, {"web1": {"fake": "compliant"}})
    run = run_cli("check", inv, "--limit", "nomatch*", "--report", str(tmp_path / "r.prom"),
                  "--report", str(tmp_path / "r.json"), timeout=60)  # fmt: skip
    assert run.returncode == 6, run.stdout + run.stderr
    assert "matched no host" in run.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["hosts"] == [] and data["exit_code"] == 6  # a stale "all compliant" file is replaced
    assert "kvm_drivers_check_exit_code 6" in (tmp_path / "r.prom").read_text()
    (tmp_path / "empty.py").write_text("hosts = []\n")
    assert run_cli("check", str(tmp_path / "empty.py")).returncode == 6


def test_report_that_cannot_be_written_exits_5_and_others_are_written(tmp_path):
    inv = inventory(tmp_path, {"a": {"fake": "compliant"}})
    blocked = tmp_path / "blocked.json"  # a directory
    blocked.mkdir()
    run = run_cli("check", inv, "--report", str(tmp_path / "missing-dir" / "r.json"), "--report", str(blocked),
                  "--report", str(tmp_path / "ok.xml"))  # fmt: skip
    assert run.returncode == 5, run.stdout + run.stderr
    assert "missing-dir/r.json could not be written" in run.stderr
    assert (tmp_path / "ok.xml").exists()
    # a drifted or broken fleet keeps the larger code
    inv = inventory(tmp_path, {"a": {"fake": "noconnect"}})
    assert run_cli("check", inv, "--report", "/proc/kvm-drivers.json").returncode == 5
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporary file left behind


def test_usage_errors_exit_1_before_checking(tmp_path):
    inv = inventory(tmp_path, {"a": {"fake": "hang"}})
    assert run_cli("check", inv, "--report", str(tmp_path / "r.csv")).returncode == 1
    assert run_cli("check", str(tmp_path / "nope.py")).returncode == 1
    assert run_cli("check", inv, "--data", "novalue").returncode == 1
    assert run_cli("check", inv, "--timeout", "0").returncode == 1
    assert run_cli("check").returncode == 1  # argparse's own code would be 2, which means "drifted"
    (tmp_path / "broken.py").write_text("hosts = [\n")
    run = run_cli("check", str(tmp_path / "broken.py"))
    assert run.returncode == 1 and "cannot load inventory" in run.stderr


def test_previous_report_says_which_hosts_changed_nightly_with_one_file(tmp_path):
    # The nightly pattern: the same file is the previous report and this run's report.
    last = tmp_path / "last.json"
    night1 = inventory(tmp_path, {"web1": {"fake": "compliant"}, "web2": {"fake": "compliant"},
                                  "db1": {"fake": "drifted"}, "old": {"fake": "compliant"}})  # fmt: skip
    first = run_cli("check", night1, "--previous", str(last), "--report", str(last))
    assert first.returncode == 2, first.stdout + first.stderr
    assert f"no previous report at {last} (a first run?)" in first.stderr
    assert "changes" not in json.loads(last.read_text())
    since = json.loads(last.read_text())["generated_at"]
    night2 = inventory(tmp_path, {"web1": {"fake": "compliant"}, "web2": {"fake": "drifted"},
                                  "db1": {"fake": "compliant"}, "new1": {"fake": "noconnect"}})  # fmt: skip
    run = run_cli("check", night2, "--previous", str(last), "--report", str(last), "--report",
                  str(tmp_path / "r.prom"), "--report", str(tmp_path / "r.html"), "--report", str(tmp_path / "r.xml"))
    assert run.returncode == 4, run.stdout + run.stderr
    text = run.stdout.splitlines()
    assert text[-5:] == [
        f"Changed since the previous report ({since}):",
        "  worse: 1: web2 (compliant -> drifted)",
        "  better: 1: db1 (drifted -> compliant)",
        "  new hosts: 1: new1 (error)",
        "  not in this check: 1: old (compliant)",
    ], run.stdout
    doc = json.loads(last.read_text())
    assert doc["changes"] == {"since": since, "hosts": [
        {"host": "web2", "before": "compliant", "after": "drifted", "change": "worse"},
        {"host": "db1", "before": "drifted", "after": "compliant", "change": "better"},
        {"host": "new1", "before": None, "after": "error", "change": "new"},
        {"host": "old", "before": "compliant", "after": None, "change": "gone"},
    ]}  # fmt: skip
    prom = (tmp_path / "r.prom").read_text()
    assert 'kvm_drivers_changed_hosts{change="worse"} 1' in prom
    assert 'kvm_drivers_host_status_change{host="web2",before="compliant",after="drifted",change="worse"} 1' in prom
    page = (tmp_path / "r.html").read_text()
    assert 'data-changed="worse"' in page and "(was compliant)" in page and 'id="changed"' in page
    assert "status in the previous report: compliant" in (tmp_path / "r.xml").read_text()
    # --quiet: only the hosts that got worse
    quiet = run_cli("check", night2, "--previous", str(tmp_path / "r.json.none"), "--quiet")
    assert "Changed since" not in quiet.stdout
    again = run_cli("check", night2, "--previous", str(last), "--quiet")
    assert "No status changed since" not in again.stdout and "Changed since" not in again.stdout
    assert run_cli("check", night2, "--previous", str(last)).stdout.splitlines()[-1].startswith(
        "No status changed since the previous report"
    )
    # a night whose --limit matched nothing keeps the baseline (the next night compares with it)
    before = last.read_text()
    empty = run_cli("check", night2, "--limit", "nomatch", "--previous", str(last), "--report", str(last))
    assert empty.returncode == 6 and "kept as it was" in empty.stderr and last.read_text() == before


@pytest.mark.parametrize("content, cause", [
    ("{", "not JSON"),
    ("[]", "not a kvm-drivers JSON report"),
    ('{"schema_version": 1, "hosts": [{"host": "a", "status": "fine"}]}', "host entry 0 has no host name or no known"),
    ('{"schema_version": 1, "hosts": [{"status": "compliant"}]}', "host entry 0"),
    (b"\xff\xfe", "not JSON"),
    ("[" * 200_000, "not JSON (RecursionError"),
    (None, "not a regular file"),  # a FIFO: never waited on
], ids=["cut", "list", "status", "no-host", "binary", "deep", "fifo"])  # fmt: skip
def test_a_previous_report_that_cannot_be_used_is_a_usage_error_before_checking(tmp_path, content, cause):
    prev = tmp_path / "prev.json"
    if content is None:
        os.mkfifo(prev)
    else:
        prev.write_bytes(content if isinstance(content, bytes) else content.encode())
    inv = inventory(tmp_path, {"a": {"fake": "hang"}})  # never reached: the error comes first
    run = run_cli("check", inv, "--previous", str(prev), "--report", str(tmp_path / "r.json"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"--previous {prev}: cannot be used: " in run.stderr and cause in run.stderr, run.stderr
    assert not (tmp_path / "r.json").exists()


def test_progress_only_on_a_terminal(tmp_path):
    inv = inventory(tmp_path, {f"h{i}": {"fake": "compliant"} for i in range(3)})
    assert "hosts checked" not in run_cli("check", inv).stderr  # stderr is a pipe: no progress line
    master, slave = pty.openpty()
    env = {**os.environ, "KVM_DRIVERS_CACHE": "off", "PYTHONPATH": str(ROOT)}
    from tests.fake_connector import RUNNER

    proc = subprocess.run([sys.executable, "-c", RUNNER, "check", inv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=slave, stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.returncode == 0
    assert b"kvm-drivers: 3/3 hosts checked" in seen
    assert b"hosts checked" not in proc.stdout


def test_console_script_and_module_entry_point():
    scripts = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    module, func = re.search(r'^kvm-drivers = "([\w.]+):(\w+)"$', scripts, re.M).groups()
    code = f"import {module} as m; import sys; sys.exit(m.{func}(['check', '--help']))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True).returncode == 0
    run = subprocess.run([sys.executable, "-m", "kvm_drivers", "check", "--help"], cwd=ROOT, capture_output=True,
                         text=True)  # fmt: skip
    assert run.returncode == 0 and "--timeout" in run.stdout and "exit codes" in run.stdout
