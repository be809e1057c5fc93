"""Report formats read by real parsers: JSON against its published schema, Prometheus with
prometheus_client's parser, JUnit XML with ElementTree, HTML in headless Chromium; hostile host data."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvm_drivers import report
from kvm_drivers.facts.wire import parse_snapshot
from kvm_drivers.operations.plan import STATUSES
from tests.fake_connector import gather_output
from tests.planning import analyse

ROOT = Path(__file__).parent.parent
FIX = Path(__file__).parent / "fixtures"
SCHEMA = json.loads((ROOT / "schemas" / "drift-report.schema.json").read_text())
EVIL = 'evil"host\\\n<script>alert(1)</script>\x1b[31mred\x1b[0m\u202e\x00'


def real_rows() -> list[dict]:
    """Rows from captured gather outputs of real hosts (Debian 12 initramfs-tools and dracut), made
    compliant, drifted, unsupported, and a host that could not be reached, whose name is hostile."""
    dracut = analyse(parse_snapshot((FIX / "gather-bookworm-dracut.txt").read_text().splitlines()))
    drifted = analyse(parse_snapshot(gather_output("drifted")))
    compliant = analyse(parse_snapshot(gather_output("compliant")))
    arch = gather_output("compliant")
    start = arch.index("@@KVM file /etc/os-release")
    arch[start + 1 : arch.index("@@KVM file /etc/debian_version")] = ['NAME="<b>Arch</b>\x1b]0;pwned\x07"', "ID=arch"]
    unsupported = analyse(parse_snapshot(arch))
    return [
        report.host_row("web1", drifted),
        report.host_row("web2", compliant),
        report.host_row("db1", dracut),
        report.host_row("arch1", unsupported),
        report.host_row(EVIL, None, "unreachable: <img src=x onerror=alert(1)>\r\n\x1b[2J"),
    ]


def test_fixture_rows_cover_every_status():
    assert [r["status"] for r in real_rows()] == ["drifted", "compliant", "drifted", "unsupported", "error"]


@pytest.mark.parametrize("rows", [real_rows, lambda: []], ids=["fleet", "no host"])
def test_json_report_matches_published_schema(rows):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    doc = json.loads(report.to_json(rows(), {"generated_at": 1_700_000_000, "duration_seconds": 1.5}))
    jsonschema.validate(doc, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert doc["generated_at"] == "2023-11-14T22:13:20+00:00"


# The previous night: web1 was compliant, db1 error, an old host gone since; web2 unchanged; arch1 and
# the hostile host are new.
PREVIOUS = {"generated_at": "2023-11-13T22:13:20+00:00",
            "statuses": {"web1": "compliant", "web2": "compliant", "db1": "error", "gone1": "drifted"}}  # fmt: skip


def test_report_with_changes_since_a_previous_one_matches_the_schema(tmp_path):
    old = tmp_path / "old.json"
    report.write_report(old, real_rows(), {"generated_at": 1_699_913_600})
    assert report.read_previous(old)["statuses"][EVIL] == "error"  # a report of ours reads back, names as they were
    previous = {**PREVIOUS, "statuses": {**PREVIOUS["statuses"]}}
    doc = json.loads(report.to_json(real_rows(), {"generated_at": 1_700_000_000, "previous": previous}))
    jsonschema.validate(doc, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert [(c["host"], c["change"]) for c in doc["changes"]["hosts"]] == [
        ("web1", "worse"), ("db1", "better"), ("arch1", "new"), (EVIL, "new"), ("gone1", "gone")]
    with pytest.raises(jsonschema.ValidationError):  # a change kind monitoring does not know
        odd = {**doc["changes"]["hosts"][0], "change": "other"}
        jsonschema.validate({**doc, "changes": {**doc["changes"], "hosts": [odd]}}, SCHEMA)
    text = report.text_table(real_rows(), previous=previous)
    assert "  worse: 1: web1 (compliant -> drifted)" in text and "\x1b" not in text


def test_schema_rejects_what_monitoring_must_not_accept():
    doc = json.loads(report.to_json(real_rows()))
    for broken in (
        {**doc, "exit_code": 1},
        {**doc, "hosts": [{**doc["hosts"][0], "status": "fine"}]},
        {**doc, "hosts": [{**doc["hosts"][4], "errors": []}]},  # an error row must say why
        {k: v for k, v in doc.items() if k != "summary"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCHEMA)


def test_prometheus_metrics_parse_and_escape_labels():
    rows = real_rows()
    text = report.to_prometheus(rows, {"generated_at": 1_700_000_000.5, "duration_seconds": 2, "exit_code": 4})
    families = {f.name: f for f in text_string_to_metric_families(text)}
    status = {(s.labels["host"], s.labels["status"]): s.value for s in families["kvm_drivers_host_status"].samples}
    assert len(status) == 4 * len(rows)
    for r in rows:
        name = report.printable(r["host"])
        assert [s for s in STATUSES if status[(name, s)] == 1] == [r["status"]]
    evil = report.printable(EVIL)
    assert "\x1b" not in evil and '"' in evil and (evil, "error") in status  # quote and backslash round-trip
    missing = {(s.labels["host"], s.labels["kernel"]): s.value for s in families["kvm_drivers_missing_modules"].samples}
    assert missing[("web1", "6.1.0-50-amd64")] == len(rows[0]["kernels"][0]["missing"]) > 0
    assert missing[("web2", "6.1.0-50-amd64")] == 0
    single = {n: families[n].samples[0].value for n in families if not families[n].samples[0].labels}
    assert single["kvm_drivers_check_timestamp_seconds"] == 1_700_000_000.5
    assert single["kvm_drivers_check_exit_code"] == 4 and single["kvm_drivers_check_hosts"] == 5
    hosts = {s.labels["status"]: s.value for s in families["kvm_drivers_hosts"].samples}
    assert hosts == {"compliant": 1, "drifted": 2, "unsupported": 1, "error": 1}


def test_junit_one_case_per_host_failures_name_missing_drivers():
    rows = real_rows()
    root = ET.fromstring(report.to_junit(rows).encode())
    suite = root.find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert len(cases) == len(rows) and suite.get("tests") == "5"
    assert suite.get("failures") == "3" and suite.get("errors") == "1"
    assert not list(cases["web2"])  # compliant: passed
    failure = cases["web1"].find("failure")
    assert failure.get("type") == "drifted" and "virtio_blk" in failure.get("message")
    assert "virtio_pci_modern_dev" in failure.get("message")
    assert cases["arch1"].find("failure").get("type") == "unsupported"
    error = cases[report.printable(EVIL)].find("error")
    assert error is not None and "<img src=x" in error.get("message")  # escaped by XML, read back as text


def test_text_escapes_control_characters_and_fits_the_width():
    rows = real_rows()
    text = report.text_table(rows, width=70)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e]", text)
    assert all(len(line) <= 70 for line in text.splitlines())
    assert "\\x1b[31mred" in text or "\\x1b" in text
    groups = [line.split(":")[0] for line in text.splitlines() if re.match(r"^[A-Z]+: \d+ host", line)]
    assert groups == ["ERROR", "UNSUPPORTED", "DRIFTED", "COMPLIANT"]  # the worst first
    quiet = report.text_table(rows, quiet=True)
    assert "COMPLIANT" not in quiet and "web2" not in quiet and "web1" in quiet
    assert report.text_table([rows[1]], quiet=True) == ""


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def test_html_escapes_host_data_and_pins_its_script():
    page = report.to_html(real_rows())
    assert "<script>alert" not in page and "<img src=x" not in page and "\x1b" not in page
    tags = Tags()
    tags.feed(page)
    assert [t for t, _ in tags.tags].count("script") == 1 and len(tags.scripts) == 1
    assert not [a for _, attrs in tags.tags for a in attrs if a.startswith("on")]  # no inline handlers
    csp = next(a["content"] for t, a in tags.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    digest = base64.b64encode(hashlib.sha256(tags.scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp  # only this exact script may run


def test_reports_are_written_atomically_by_suffix(tmp_path):
    rows = real_rows()
    for suffix in (".json", ".prom", ".xml", ".html", ".txt"):
        target = tmp_path / f"r{suffix}"
        target.write_text("old")
        report.write_report(target, rows)
        assert target.read_text() != "old" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.html", "r.json", "r.prom", "r.txt", "r.xml"]
    with pytest.raises(ValueError):
        report.write_report(tmp_path / "r.csv", rows)
    (tmp_path / "r.json").write_text("kept")
    with pytest.raises(OSError):
        report.write_atomic(tmp_path / "nodir" / "r.json", "x")
    assert (tmp_path / "r.json").read_text() == "kept"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dom(page: Path, fragment: str = "") -> str:
    """The page's DOM after its script ran, from headless Chromium."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000", "--dump-dom",
           page.as_uri() + fragment]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def visible_hosts(html_text: str) -> list[str]:
    tags = Tags()
    tags.feed(html_text)
    rows = [a for t, a in tags.tags if t == "tr" and "data-status" in a]
    return [a["id"] for a in rows if "hidden" not in a]


def in_chromium(test):
    """A test that renders the HTML report in headless Chromium: seconds (make test runs it, plain pytest
    does not), and only where Chromium is installed."""
    reason = "chromium is not installed (apt-get install chromium)"
    return pytest.mark.slow(pytest.mark.skipif(not CHROMIUM, reason=reason)(test))


@in_chromium
def test_html_filters_search_and_details_in_chromium(tmp_path):
    rows = real_rows()
    page = tmp_path / "report.html"
    report.write_report(page, rows)
    order = [report.printable(r["host"]) for r in report.ordered(rows)]  # row ids h0.. follow this order
    ids = {name: f"h{i}" for i, name in enumerate(order)}

    everything = dom(page)
    assert sorted(visible_hosts(everything)) == sorted(ids.values())
    assert f"{len(rows)} of {len(rows)} hosts shown" in everything
    drifted = dom(page, "#status=drifted")
    assert sorted(visible_hosts(drifted)) == sorted([ids["web1"], ids["db1"]])
    assert "2 of 5 hosts shown" in drifted
    assert sorted(visible_hosts(dom(page, "#status=drifted,compliant&q=web"))) == sorted([ids["web1"], ids["web2"]])
    assert sorted(visible_hosts(dom(page, "#family=debian"))) == sorted([ids["web1"], ids["web2"], ids["db1"]])
    assert visible_hosts(dom(page, "#q=scsi_mod")) == [ids["web1"]]  # missing only from web1's initrd
    assert visible_hosts(dom(page, "#q=DB1%20virtio_net")) == [ids["db1"]]  # every word, any case
    assert visible_hosts(dom(page, "#q=no-such-host")) == []
    opened = dom(page, "#status=error&open=all")
    tags = Tags()
    tags.feed(opened)
    details = {a["id"]: "hidden" not in a for t, a in tags.tags if t == "tr" and a.get("class") == "details"}
    assert details[ids[report.printable(EVIL)].replace("h", "d")] is True
    assert details[ids["web1"].replace("h", "d")] is False  # filtered out: its details stay closed
    assert "<script>alert" not in opened
    # compared with the previous night: the "only changed" box keeps the hosts whose status changed
    report.write_report(page, rows, {"previous": PREVIOUS})
    assert "not in this check: gone1" in dom(page)
    changed = [ids[n] for n in ("web1", "db1", "arch1", report.printable(EVIL))]
    assert sorted(visible_hosts(dom(page, "#changed=1"))) == sorted(changed)
    assert visible_hosts(dom(page, "#changed=1&q=was%20compliant")) == [ids["web1"]]
