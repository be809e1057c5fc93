"""A hostile or broken host: what it prints never chooses a path or a command on the control
machine, never aborts the run for the other hosts, and never yields a false "compliant".

Each test names the finding of issue #11 it covers.
"""

from __future__ import annotations

from pathlib import Path

from facts import kvm_drivers as kd
from facts import parsers as p

FIX = Path(__file__).parent / "fixtures"
ITOOLS = (FIX / "gather-bookworm-itools.txt").read_text().splitlines()


def test_release_file_path_sent_by_host_writes_nothing_on_control_machine(tmp_path):
    # Critical: "@@KVM file /etc/../../../../tmp/x/cron.d/kvm-release" used to be written there.
    target = tmp_path / "cron.d"
    target.mkdir()
    evil = f"/etc/../../../../../../..{target}/kvm-release"
    lines = ITOOLS[:-1] + [f"@@KVM file {evil}", "* * * * * root touch /pwned", "", "@@KVM end"]
    info = kd.analyse(p.parse_snapshot(lines))
    assert list(target.iterdir()) == []
    assert info["status"] == "error" and any("unexpected file section" in e for e in info["errors"])
    # parse_distro alone, given such a path, writes only its own fixed names in its own directory
    p.parse_distro({evil: "ID=debian\n", "/etc/os-release": "ID=debian\nVERSION_ID=12\n"})
    assert list(target.iterdir()) == []
