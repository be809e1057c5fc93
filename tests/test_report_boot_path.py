"""Boot-path findings (issue 20) in every report format: each its own row kind, with its severity
(blocks boot, blocks network, advice) and who fixes it. Findings come from the real readers
(facts/boot_path.py, facts/network.py) over hostile file texts and names, through plan(); the
formats are read back by real parsers (jsonschema, prometheus_client, ElementTree, Chromium)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict

import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvm_drivers import report
from kvm_drivers.facts.boot_path import (
    KINDS,
    SEVERITIES,
    fstab_findings,
    kernel_findings,
    modprobe_findings,
)
from kvm_drivers.facts.network import network_findings
from kvm_drivers.facts.state import host_state
from kvm_drivers.facts.wire import parse_snapshot
from kvm_drivers.operations.plan import Plan, plan
from kvm_drivers.operations.settings import OPT_IN, Settings
from tests.fake_connector import gather_output
from tests.test_report_formats import EVIL, SCHEMA, Tags, dom, in_chromium

FSTAB = "UUID=0a1b / ext4 defaults 0 1\n/dev/xvdb1 /data\x1b[31m ext4 defaults 0 2\n/dev/xvda2 none swap sw 0 0\n"
PV_CONF = "/etc/modprobe.d/<script>alert(1)</script>.conf"  # a file name is host data too
IFCFG = "/etc/sysconfig/network-scripts/ifcfg-<img src=x onerror=alert(2)>"
CONFIGS = {"4.4.0-xen": "CONFIG_XEN=y\n",
           "4.4.0-default": "CONFIG_VIRTIO_BLK=m\nCONFIG_VIRTIO_NET=m\nCONFIG_VIRTIO_PCI=m\n"}  # fmt: skip


def found() -> dict[str, list[dict]]:
    """Findings of each severity, as the state carries them (plain dicts), from the real readers."""
    fstab = fstab_findings(FSTAB)  # /data blocks boot; the swap device is advice
    kernel = kernel_findings(list(CONFIGS.items()), "4.4.0-xen")  # needs a person
    pv = modprobe_findings("alias scsi_hostadapter xenblk\n", PV_CONF)  # advice
    mac = network_findings({IFCFG: "DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nBOOTPROTO=dhcp\n"})  # blocks network
    return {name: [asdict(f) for f in fs] for name, fs in
            (("fstab", fstab), ("kernel", kernel), ("pv", pv), ("mac", mac))}  # fmt: skip


def host(kind: str, boot_path: list[dict], settings: Settings) -> Plan:
    snap = parse_snapshot(gather_output(kind))
    if not snap.drivers and snap.complete:
        snap.drivers = settings.lookup()
    state = host_state(snap)
    state.boot_path = boot_path
    return plan(state, settings)


def plans() -> dict[str, Plan]:
    f = found()
    fixing = Settings.read(fix_device_names=True)
    return {
        # drifted anyway (initrd), with every severity; device names are being fixed, the network is not
        "web1": host("drifted", f["fstab"] + f["kernel"] + f["pv"] + f["mac"], fixing),
        # a good initrd, only advice: stays compliant
        "web2": host("compliant", f["pv"], Settings.read()),
        # a good initrd, and a MAC binding: drifted for that alone
        EVIL: host("compliant", f["mac"], Settings.read()),
    }


def rows() -> list[dict]:
    return [report.host_row(name, p) for name, p in plans().items()] + [report.host_row("db9", None, "unreachable")]


def by_host(rs: list[dict]) -> dict[str, dict]:
    return {r["host"]: r for r in rs}


def test_findings_are_found_and_decide_the_status():
    f = found()
    assert [x["severity"] for x in f["fstab"]] == ["blocks boot", "advice"]
    assert [(x["kind"], x["severity"]) for x in f["kernel"] + f["pv"] + f["mac"]] == [
        ("no-virtio-kernel", "blocks boot"), ("pv-leftover", "advice"), ("nic-mac-binding", "blocks network")]
    p = plans()
    assert [x.status for x in p.values()] == ["drifted", "compliant", "drifted"]
    assert any("xenblk" in w for w in p["web2"].warnings)  # advice is a warning too (plan.py)


def test_rows_carry_every_finding_with_stable_keys():
    rs = by_host(rows())
    keys = {"kind", "severity", "where", "line", "text", "message", "opt_in", "fixing"}
    assert all(set(r) == set(rs["db9"]) for r in rs.values())  # the same keys on every row
    assert rs["db9"]["boot_path"] == []
    web1 = rs["web1"]["boot_path"]
    assert all(set(x) == keys for x in web1) and len(web1) == 5
    assert [x["severity"] for x in web1] == ["blocks boot", "advice", "blocks boot", "advice", "blocks network"]
    data = next(x for x in web1 if x["line"] == 2 and x["where"] == "/etc/fstab")
    assert data["text"] == "/dev/xvdb1 /data\\x1b[31m ext4 defaults 0 2"  # the line only escaped
    assert data["opt_in"] == "kvm_fix_device_names" and data["fixing"] is True
    mac = next(x for x in web1 if x["kind"] == "nic-mac-binding")
    assert mac["opt_in"] == "kvm_fix_network" and mac["fixing"] is False
    kernel = next(x for x in web1 if x["kind"] == "no-virtio-kernel")
    assert kernel["opt_in"] == "" and kernel["where"] == "/boot/config-4.4.0-xen" and kernel["line"] == 0
    assert json.loads(json.dumps(rs["web1"])) == rs["web1"]  # plain JSON: no tuples, no fix objects


def test_json_findings_match_the_schema_and_its_enums():
    doc = json.loads(report.to_json(rows(), {"generated_at": 1_700_000_000}))
    jsonschema.validate(doc, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    finding = SCHEMA["$defs"]["finding"]["properties"]
    assert finding["kind"]["enum"] == list(KINDS) and finding["severity"]["enum"] == list(SEVERITIES)
    assert set(finding["opt_in"]["enum"]) == set(OPT_IN.values()) | {""}
    hosts = by_host(doc["hosts"])
    assert "\x1b" in hosts["web1"]["boot_path"][0]["message"]  # JSON escapes it; the text field is printable()
    web1, web2 = doc["hosts"].index(hosts["web1"]), doc["hosts"].index(hosts["web2"])
    blocking = hosts["web1"]["boot_path"][0]
    for broken in (
        {**hosts["web1"], "boot_path": [{**blocking, "kind": "other"}]},
        {**hosts["web1"], "boot_path": [{**blocking, "severity": "fatal"}]},
        {**hosts["web1"], "boot_path": [{k: v for k, v in blocking.items() if k != "opt_in"}]},
        {k: v for k, v in hosts["web1"].items() if k != "boot_path"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**doc, "hosts": [*doc["hosts"][:web1], broken, *doc["hosts"][web1 + 1:]]}, SCHEMA)
    compliant_but_blocked = {**hosts["web2"], "boot_path": [blocking]}  # a blocking finding is never compliant
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "hosts": [*doc["hosts"][:web2], compliant_but_blocked]}, SCHEMA)


def test_text_table_says_what_blocks_and_who_fixes_it_once():
    rs = rows()
    text = report.text_table(rs)
    lines = [x.strip() for x in text.splitlines()]
    assert ("blocks boot: /etc/fstab line 2: /data\\x1b[31m: /dev/xvdb1 is a Xen virtual disk name; on KVM the disk is "
            "vdX (virtio-blk), and the order may differ; the boot stops (systemd: emergency mode, local-fs.target "
            "requires it) (kvm_fix_device_names is set: the deploy fixes it)") in lines
    assert any(x.startswith("blocks boot: /boot/config-4.4.0-xen: the default kernel 4.4.0-xen")
               and x.endswith("(needs a person)") for x in lines)  # fmt: skip
    net = [x for x in lines if x.startswith("blocks network: ")]
    assert len(net) == 2 and all(x.endswith("(fix: set kvm_fix_network)") for x in net)  # web1 and the hostile host
    pv = [x for x in lines if "scsi_hostadapter -> xenblk" in x]
    assert len(pv) == 2 and all(x.startswith(f"advice: {PV_CONF} line 1: ") for x in pv)  # once per host
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e]", text)
    assert all(len(x) <= 80 for x in report.text_table(rs, width=80).splitlines())
    quiet = report.text_table(rs, quiet=True)
    assert "web2" not in quiet and "blocks network" in quiet  # compliant with advice only: not a problem


def test_prometheus_counts_findings_per_host_kind_and_severity():
    text = report.to_prometheus(rows(), {"generated_at": 1_700_000_000})
    assert "# HELP kvm_drivers_boot_path_findings " in text and "# TYPE kvm_drivers_boot_path_findings gauge" in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    got = {(s.labels["host"], s.labels["kind"], s.labels["severity"]): s.value
           for s in families["kvm_drivers_boot_path_findings"].samples}  # fmt: skip
    assert got == {
        ("web1", "device-name", "blocks boot"): 1, ("web1", "device-name", "advice"): 1,
        ("web1", "no-virtio-kernel", "blocks boot"): 1, ("web1", "pv-leftover", "advice"): 1,
        ("web1", "nic-mac-binding", "blocks network"): 1, ("web2", "pv-leftover", "advice"): 1,
        (report.printable(EVIL), "nic-mac-binding", "blocks network"): 1,
    }  # fmt: skip
    assert "kvm_drivers_boot_path_findings" not in report.to_prometheus([rows()[-1]])  # none found: no family


def test_junit_fails_a_case_per_host_and_blocking_kind():
    rs = rows()
    suite = ET.fromstring(report.to_junit(rs).encode()).find("testsuite")
    cases = suite.findall("testcase")
    hosts = {c.get("name"): c for c in cases if not c.get("classname").startswith("kvm-drivers.boot-path.")}
    kinds = {(c.get("classname"), c.get("name")): c for c in cases if c.get("classname").startswith("kvm-drivers.boot")}
    assert len(hosts) == len(rs)  # one case per host, as before
    evil = report.printable(EVIL)
    assert sorted(kinds) == sorted([
        ("kvm-drivers.boot-path.device-name", "web1"), ("kvm-drivers.boot-path.no-virtio-kernel", "web1"),
        ("kvm-drivers.boot-path.nic-mac-binding", "web1"), ("kvm-drivers.boot-path.nic-mac-binding", evil)])
    assert suite.get("tests") == str(len(rs) + 4) and suite.get("failures") == str(2 + 4)
    assert suite.get("errors") == "1"
    data = kinds[("kvm-drivers.boot-path.device-name", "web1")].find("failure")
    assert data.get("type") == "blocks boot" and data.get("message").startswith("blocks boot: /etc/fstab line 2: ")
    assert "\x1b" not in data.get("message") and "the line: /dev/xvdb1 /data\\x1b[31m" in data.text
    mac = kinds[("kvm-drivers.boot-path.nic-mac-binding", evil)].find("failure")
    assert mac.get("type") == "blocks network" and IFCFG in mac.get("message")  # read back as text
    # the host's own case: failed for the MAC binding alone, its message names it
    assert hosts[evil].find("failure").get("message").startswith("blocks network: ")
    body = hosts["web1"].find("failure").text
    assert body.count("scsi_hostadapter -> xenblk") == 1 and "advice: " + PV_CONF in body  # advice once, labelled
    assert hosts["web2"].find("failure") is None  # compliant: passed, the advice is its output
    assert hosts["web2"].find("system-out").text.startswith("advice: " + PV_CONF)


def test_html_lists_findings_with_badges_escaped_and_keeps_its_script_pinned():
    page = report.to_html(rows())
    assert "<script>alert" not in page and "<img src=x" not in page and "\x1b" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "/data\\x1b[31m" in page
    for cls, label in (("boot", "blocks boot"), ("network", "blocks network"), ("advice", "advice")):
        assert f'<span class="sev sev-{cls}">{label}</span>' in page
    tags = Tags()
    tags.feed(page)
    assert [t for t, _ in tags.tags].count("script") == 1 and len(tags.scripts) == 1
    assert not [a for _, attrs in tags.tags for a in attrs if a.startswith("on")]
    csp = next(a["content"] for t, a in tags.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    digest = base64.b64encode(hashlib.sha256(tags.scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    assert [a.get("class") for t, a in tags.tags if t == "table"].count("findings") == 3  # web1, web2, the hostile one
    after = page.split('<span class="host">web2</span>')[1]
    web2 = re.split(r'<tr class="(?:compliant|drifted|unsupported|error)"', after)[0]  # its row and details
    assert web2.count("scsi_hostadapter -&gt; xenblk") == 1  # in its findings, not again under its warnings


@in_chromium
def test_html_findings_in_chromium(tmp_path):
    rs = rows()
    page = tmp_path / "report.html"
    report.write_report(page, rs)
    opened = dom(page, "#open=all")
    assert f"{len(rs)} of {len(rs)} hosts shown" in opened  # the pinned script ran
    assert opened.count("<script") == 1 and "<img" not in opened  # nothing from the hosts became markup
    tags = Tags()
    tags.feed(opened)
    details = [a for t, a in tags.tags if t == "tr" and a.get("class") == "details"]
    assert details and not [a for a in details if "hidden" in a]  # every host's details open
    searched = dom(page, "#q=blocks%20network")
    tags = Tags()
    tags.feed(searched)
    shown = [a["id"] for t, a in tags.tags if t == "tr" and "data-status" in a and "hidden" not in a]
    assert len(shown) == 2  # the search reads findings: web1 and the hostile host
