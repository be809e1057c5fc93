"""The drift report: rows, exit codes, text, JSON and HTML, from real captured host states."""

import json
from html.parser import HTMLParser
from pathlib import Path

from kvm_drivers import report
from kvm_drivers.facts.state import VIRTIO
from kvm_drivers.facts.wire import parse_snapshot
from kvm_drivers.operations.plan import Plan
from tests.planning import analyse

FIX = Path(__file__).parent / "fixtures"


def info(name: str) -> Plan:
    return analyse(parse_snapshot((FIX / name).read_text().splitlines()))


def rows() -> list[dict]:
    drifted = report.host_row("web1", info("gather-bookworm-itools.txt"))
    snap = parse_snapshot((FIX / "gather-bookworm-itools.txt").read_text().splitlines())
    first = analyse(snap)
    snap.initrds["/boot/initrd.img-6.1.0-50-amd64"].modules |= set(first.kernels[0].needed)
    snap.files["/etc/initramfs-tools/modules"] += "\n".join(VIRTIO) + "\n"
    compliant = report.host_row("web2", analyse(snap))
    snap.files["/etc/os-release"] = 'NAME="Arch Linux"\nID=arch\n'
    del snap.files["/usr/lib/os-release"]
    unsupported = report.host_row("arch1", analyse(snap))
    unreachable = report.host_row("db9", None, "unreachable: SSH connection failed")
    return [drifted, compliant, unsupported, unreachable]


def test_rows_statuses_and_keys():
    r = rows()
    assert [x["status"] for x in r] == ["drifted", "compliant", "unsupported", "error"]
    keys = set(r[0])
    assert all(set(x) == keys for x in r)  # stable keys, unreachable hosts included
    assert r[0]["default_kernel"] == "6.1.0-50-amd64"
    assert "virtio_blk" in r[0]["kernels"][0]["missing"] and r[0]["declared"] is False
    assert r[1]["declared"] is True and r[1]["kernels"][0]["missing"] == []
    assert r[3]["errors"] == ["unreachable: SSH connection failed"]


def test_exit_codes_worst_wins():
    r = rows()
    assert report.exit_code([r[1]]) == 0
    assert report.exit_code(r[:2]) == 2
    assert report.exit_code(r[:3]) == 3
    assert report.exit_code(r) == 4
    assert report.exit_code([]) == 0


def test_text_table_names_every_host_and_missing_drivers():
    text = report.text_table(rows())
    for name in ("web1", "web2", "arch1", "db9"):
        assert name in text
    assert "virtio_blk" in text and "error: unreachable: SSH connection failed" in text
    assert text.splitlines()[-1] == "4 hosts: 1 compliant, 1 drifted, 1 unsupported, 1 error"


def test_json_round_trip():
    data = json.loads(report.to_json(rows()))
    assert data["summary"] == {"compliant": 1, "drifted": 1, "unsupported": 1, "error": 1}
    assert data["exit_code"] == 4 and [h["host"] for h in data["hosts"]] == ["web1", "web2", "arch1", "db9"]


class Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.cur, self.th = [], None, []

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.cur = {"attrs": dict(attrs), "cells": []}
            self.rows.append(self.cur)

    def handle_data(self, data):
        if self.cur is not None and data.strip():
            self.cur["cells"].append(data.strip())


def test_html_has_a_coloured_row_per_host_and_counts():
    page = report.to_html(rows())
    parser = Cells()
    parser.feed(page)
    body = [r for r in parser.rows if r["attrs"].get("class")]
    hosts = [r for r in body if "data-status" in r["attrs"]]
    assert [r["attrs"]["class"] for r in hosts] == ["error", "unsupported", "drifted", "compliant"]  # worst first
    assert len({r["attrs"]["style"] for r in hosts}) == 4
    assert [r["attrs"]["class"] for r in body].count("details") == 4  # one expandable details row per host
    assert "<script>" in page and '<span class="host">db9</span>' in page


def test_html_escapes_host_data():
    r = report.host_row("<b>x</b>", None, "<script>alert(1)</script>")
    page = report.to_html([r])
    assert "<script>alert(1)" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
