"""The deploy on real hosts over SSH, proven by QEMU boots before and after.

One module-scoped run does the expensive work in the order a user would (boot, deploy,
deploy again, boot); the tests then assert each promise separately.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import testinfra

from kvm_drivers.facts import kvm_drivers as kd
from kvm_drivers.facts.wire import parse_snapshot
from kvm_drivers.operations.settings import wanted_drivers
from tests.conftest import ROOT, Run, check_cli, pyinfra
from tests.lab import boot, hosts
from tests.planning import analyse

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("lab-deploy")]  # one worker: shared hosts and inventory
INVENTORY, DEPLOY = "inventories/lab.py", "deploys/kvm_drivers.py"
HOOK_HOST = "deb12-itools-b"
REPORTS = hosts.STATE / "reports"
CHECK_FORMATS = (".json", ".prom", ".xml", ".html", ".txt")


def report_args(stem: str) -> list[str]:
    """--report REPORTS/STEM.SUFFIX for every format."""
    return [a for f in CHECK_FORMATS for a in ("--report", f"{REPORTS}/{stem}{f}")]


def remote(h: hosts.HostSpec):
    """A testinfra host for a lab host."""
    return testinfra.get_host(f"paramiko://root@{h.address}", ssh_identity_file=str(hosts.KEY))


def remote_info(h: hosts.HostSpec) -> dict:
    """The KvmDrivers fact of a host, gathered over SSH exactly as pyinfra does (with its kvm_kernels)."""
    cmd = hosts.in_sh(kd.gather_command(wanted_drivers("suse", None, None)).get_raw_value())
    out = remote(h).check_output(cmd)
    return analyse(parse_snapshot(out.splitlines()), kernels=dict(h.data).get("kvm_kernels", "all"))


K47, K50 = "6.1.0-47-amd64", "6.1.0-50-amd64"
# What real GRUB boots on the hosts where that is easy to get wrong: (GRUB's entry path, kernel,
# an initrd file of that size). Seen in the serial console (entry, initrd size) and by the probe (uname -r).
GRUB_CHOICE = {
    "deb12-2kernels": (f"Debian GNU/Linux, with Linux {K47}", K47, f"/boot/initrd.img-{K47}"),
    "deb12-custom-initrd": (f"Debian GNU/Linux, with Linux {K50}", K50, "/boot/initrd-kvm-custom.img"),
    "sles11": (f"SUSE Linux Enterprise Server 11 SP4 ({K50})", K50, "/boot/initrd.vmx"),
    "sles11-vmx": ("SUSE Linux Enterprise Server 11 SP4", K50, "/boot/initrd.vmx"),
    "sles15-snapshot": ("SLES 15-SP5", K47, f"/boot/initrd-{K47}"),
    "deb12-saved-title": ("Debian GNU/Linux", K50, f"/boot/initrd.img-{K50}"),
    "deb12-default-submenu": (f"Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux {K50}", K50,
                              f"/boot/initrd.img-{K50}"),
    "rocky8-bls-rpm": ("Rocky Linux (4.18.0-240.1.1.el8_3.x86_64)", K47, f"/boot/initramfs-{K47}.img"),
    "rocky9-counting": (f"Rocky Linux ({K50})", K50, f"/boot/initramfs-{K50}.img"),
    "rocky9-bls": (f"Rocky Linux ({K50})", K50, f"/boot/initramfs-{K50}.img"),
    "ubuntu2204-btrfs": (f"Ubuntu, with Linux {K50}", K50, f"/boot/initrd.img-{K50}"),
}


def sums(h: hosts.HostSpec) -> dict[str, str]:
    """sha256 of every file in the host's /boot."""
    out = remote(h).check_output("cd /boot && find . -maxdepth 1 -type f | sort | xargs sha256sum")
    return {line.split()[1]: line.split()[0] for line in out.splitlines()}


def launch_failing_boots(specs: list[hosts.HostSpec]) -> boot.AllAtOnce:
    """Start the boots before the deploy, once per distinct /boot (its fingerprint): they end before any
    root file system is found, so nothing else differs. They run on copies of the hosts and mostly wait
    for the root disk: all at once, beside the deploy and the boots after it."""
    groups: dict[str, list[hosts.HostSpec]] = {}
    for h in specs:
        groups.setdefault(boot.fingerprint(h), []).append(h)
    return boot.AllAtOnce([g[0] for g in groups.values()], log_name="boot-before.log",
                          same={g[0].name: [h.name for h in g] for g in groups.values()})  # fmt: skip


def each(func: Callable[[hosts.HostSpec], Any], specs: list[hosts.HostSpec]) -> dict[str, Any]:
    """func(h) for every host, four at a time (SSH round trips, mostly waiting)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip([h.name for h in specs], pool.map(func, specs)))


@dataclass
class Story:
    """Everything the module's single run observed."""

    before: dict[str, boot.BootResult] = field(default_factory=dict)
    info_before: dict[str, dict] = field(default_factory=dict)
    sums_before: dict[str, dict] = field(default_factory=dict)
    dry: Run | None = None
    sums_dry: dict[str, dict] = field(default_factory=dict)
    first: Run | None = None
    sums_first: dict[str, dict] = field(default_factory=dict)
    second: Run | None = None
    sums_second: dict[str, dict] = field(default_factory=dict)
    after: dict[str, boot.BootResult] = field(default_factory=dict)
    hook_output: str = ""
    check_before: subprocess.CompletedProcess | None = None
    check_after: subprocess.CompletedProcess | None = None
    check_after_fixed: subprocess.CompletedProcess | None = None
    check_nothing: subprocess.CompletedProcess | None = None


@pytest.fixture(scope="module")
def story(lab) -> Story:
    REPORTS.mkdir(parents=True, exist_ok=True)
    s = Story()
    fixed = [h for h in lab if h.expect == "fixed"]
    before = launch_failing_boots(fixed)
    after = boot.TwoAtATime()
    try:
        s.info_before = each(remote_info, lab)
        s.sums_before = each(sums, lab)
        s.check_before = check_cli(INVENTORY, *report_args("check-before"))
        s.dry = pyinfra(INVENTORY, DEPLOY, "--dry", "--json")
        s.sums_dry = each(sums, lab)
        before.written()  # the boots before the deploy have their copies of the hosts: the deploy may start
        s.first = pyinfra("-y", INVENTORY, DEPLOY)
        s.sums_first = each(sums, lab)
        s.second = pyinfra("-y", INVENTORY, DEPLOY)
        s.sums_second = each(sums, lab)
        # The boots after the deploy start now (each boots a copy of its host as it is when its turn
        # comes), beside the checks below, which change nothing; the hook's host boots after its hook.
        after.start([h for h in lab if h.expect in ("fixed", "compliant") and h.name != HOOK_HOST])
        s.check_after = check_cli(INVENTORY, *report_args("check-after"), "--previous", f"{REPORTS}/check-before.json")
        s.check_after_fixed = check_cli(INVENTORY, "--quiet", *[a for h in fixed for a in ("--limit", h.name)])
        s.check_nothing = check_cli(INVENTORY, "--limit", "no-such-host*", "--report", f"{REPORTS}/check-nothing.prom")
        # Persistence: the distribution's own kernel hook rebuilds an initrd, without kvm-drivers.
        s.hook_output = remote(hosts.spec(HOOK_HOST)).check_output(
            "/etc/kernel/postinst.d/initramfs-tools 6.1.0-50-amd64 /boot/vmlinuz-6.1.0-50-amd64 2>&1;"
            " lsinitramfs /boot/initrd.img-6.1.0-50-amd64"
        )
        after.start([hosts.spec(HOOK_HOST)])
        s.after = after.results()
        s.before = before.results()
    except BaseException:  # nothing left running (a story that failed half-way)
        before.stop()
        after.stop()
        raise
    return s


def fixed_hosts() -> list[hosts.HostSpec]:
    return [h for h in hosts.HOSTS if h.expect == "fixed"]


def refused_hosts() -> list[hosts.HostSpec]:
    return [h for h in hosts.HOSTS if h.expect == "fails"]


def test_fan_out_at_least_20_hosts_at_once(lab, story):
    assert len(lab) >= 20
    assert all(hosts.listening(h.address) for h in lab)
    for h in lab:
        assert f"[{h.name}]" in story.first.output


@pytest.mark.parametrize("h", fixed_hosts(), ids=lambda h: h.name)
def test_boot_fails_before_the_deploy(story, h):
    result = story.before[h.name]
    assert not result.ok, result.summary()
    assert "virtio_blk" not in result.bound.values()
    assert result.entry, result.summary()  # GRUB chose an entry and booted it
    assert not result.kernel  # the root file system was never reached: no probe result
    assert boot.NO_ROOT.search(result.cause), result.summary()  # and its console says so, before any time limit
    assert story.info_before[h.name].status == "drifted"
    assert "virtio_blk" in story.info_before[h.name].kernels[0].missing


def test_dry_run_changes_nothing_and_names_the_hosts(story):
    assert story.dry.returncode == 0, story.dry.output
    plan = json.loads(story.dry.output[story.dry.output.index('{"plan"') :].splitlines()[0])["plan"]
    # One operation can carry several names (pyinfra merges the per-kernel rebuilds of different hosts
    # made at the same line: "name" is any one of them), and two operations the same name: union them.
    changes: dict[str, set[str]] = {}
    for op in plan:
        for name in op["names"]:
            changes.setdefault(name.split(" | ", 1)[-1], set()).update(op["hosts_with_change"])  # "deploy | op"
    fixed = {h.name for h in fixed_hosts()}
    assert changes["Declare the KVM drivers"] == fixed
    rebuilt = set().union(*[v for k, v in changes.items() if k.startswith("Rebuild the initrd of kernel ")])
    assert rebuilt == fixed
    assert changes["Report what was done"] == fixed
    assert changes["Refuse an unsupported or broken host"] == {h.name for h in refused_hosts()}
    assert story.sums_before == story.sums_dry


def test_first_run_fixes_every_supported_host_and_only_refuses(story):
    expected = 0  # per host: the declaration, one rebuild per kernel, the report of what was done
    for h in fixed_hosts():
        info = story.info_before[h.name]
        if dict(h.data).get("kvm_remove_blacklists") and info.blacklisted:
            expected += 1 + len([k for k in info.kernels if not k.too_old and k.needed])  # initrds carry modprobe.d
        else:
            expected += len(info.to_rebuild)
        expected += bool(info.to_declare) + 1
    assert story.first.changed() == expected, story.first.output
    for h in fixed_hosts():  # the per-host summary names what was done
        said = [ln for ln in story.first.output.splitlines() if re.search(rf"\[{h.name}\]\s+kvm-drivers: ", ln)]
        assert any("declaration written: " in ln for ln in said), (h.name, said)
        kept = "rebuilt and verified; the last one not built by kvm-drivers is kept as "
        assert any(kept in ln for ln in said), (h.name, said)
    errors = story.first.errors()
    assert errors == len(refused_hosts()), story.first.output
    assert (story.first.returncode == 0) == (errors == 0)


@pytest.mark.parametrize("h", refused_hosts(), ids=lambda h: h.name)
def test_refused_host_gets_a_clear_message_and_is_untouched(story, h):
    info = story.info_before[h.name]
    assert info.status == "unsupported" and info.errors
    line = next(ln for ln in story.first.output.splitlines() if f"[{h.name}]" in ln and "kvm-drivers:" in ln)
    assert info.errors[0] in line and "nothing was changed" in line
    assert story.sums_before[h.name] == story.sums_first[h.name] == story.sums_second[h.name]


def test_compliant_host_is_left_alone(story):
    for h in [h for h in hosts.HOSTS if h.expect == "compliant"]:
        assert story.info_before[h.name].status == "compliant", story.info_before[h.name]
        assert story.sums_before[h.name] == story.sums_first[h.name]
        assert story.after[h.name].ok, story.after[h.name].summary()


@pytest.mark.parametrize("h", fixed_hosts(), ids=lambda h: h.name)
def test_declared_files_and_rebuilt_initrd(story, h):
    host = remote(h)
    info = remote_info(h)
    assert info.status == "compliant", info
    gen = info.generator
    as_module = [d for d in info.wanted if any(d in k.modules for k in info.kernels)]
    builtin = [d for d in info.wanted if d not in as_module]
    if gen == "initramfs-tools":
        f = host.file("/etc/initramfs-tools/modules")
        for d in as_module:
            assert f.contains(f"^{d}$")
        for d in builtin:  # built into every kernel: never declared
            assert not f.contains(f"^{d}$")
        # every line it had before is still there
        assert f.contains("^xen-blkfront$") and f.contains("^ext4$")
        assert len([ln for ln in f.content_string.splitlines() if ln == "virtio_blk"]) == 1
    elif gen == "dracut":
        f = host.file("/etc/dracut.conf.d/90-kvm-drivers.conf")
        first = "ata_piix ata_generic " if info.state.distro.family.startswith("suse") else ""
        assert f.contains(f'add_drivers+=" {first}virtio_blk virtio_scsi virtio_net virtio_pci virtio_ring virtio "')
    elif gen == "suse-mkinitrd":
        f = host.file("/etc/sysconfig/kernel")
        mods = "ata_piix ata_generic ext4 xen-blkfront virtio_blk virtio_scsi virtio_net virtio_pci virtio_ring virtio"
        assert f.contains(f'^INITRD_MODULES="{mods}" # root disk on Xen$')
        assert f.contains('^DOMU_INITRD_MODULES="xennet xenblk"$')
    for kernel in info.kernels:
        assert kernel.missing == []
        listing = host.check_output("lsinitrd %s 2>/dev/null || lsinitramfs %s", kernel.initrd, kernel.initrd)
        for m in kernel.needed:
            assert f"/{m}.ko" in listing.replace("-", "_"), m
        assert host.file(kernel.initrd + ".kvm-drivers.bak").exists


def test_second_run_changes_nothing(story):
    assert story.second.changed() == 0, story.second.output
    errors = story.second.errors()
    assert errors == len(refused_hosts()), story.second.output  # only the refusals, again
    assert story.second.returncode == (1 if errors else 0)
    assert story.sums_first == story.sums_second  # no initrd rewritten


@pytest.mark.parametrize("h", fixed_hosts(), ids=lambda h: h.name)
def test_boot_succeeds_after_the_deploy(story, h):
    result = story.after[h.name]
    assert result.ok, result.summary() + "\n" + result.log[-3000:]
    assert result.root.startswith("/dev/vda")
    assert "virtio_net" in result.bound.values()
    assert result.boot_image and result.cmdline.startswith("BOOT_IMAGE="), result.cmdline


@pytest.mark.parametrize("name", sorted(GRUB_CHOICE))
def test_grub_boots_the_entry_expected(story, name):
    entry, kernel, initrd = GRUB_CHOICE[name]
    before, after = story.before[name], story.after[name]
    assert before.entry == entry, before.summary()
    if before.grub_initrd_size is not None:  # GRUB's linux16 loader (legacy menu.lst) does not print it
        assert initrd in before.initrd.split(), before.summary()
    assert after.entry == entry and after.kernel == kernel, after.summary()
    assert initrd in after.initrd.split(), after.summary()


def test_declaration_persists_through_the_distributions_own_rebuild(story):
    assert "virtio_blk.ko" in story.hook_output and "virtio_pci.ko" in story.hook_output
    assert story.after[HOOK_HOST].ok  # the hook-built initrd boots


def test_blacklist_is_reported_then_removed_on_request(story):
    info = story.info_before["deb12-blacklist"]
    assert [b.driver for b in info.blacklisted] == ["virtio_blk"]
    conf = remote(hosts.spec("deb12-blacklist")).file("/etc/modprobe.d/no-virtio.conf")
    assert conf.contains("^# disabled by kvm-drivers .*: install virtio_blk /bin/false$")
    assert conf.contains("^options loop max_loop=8$")
    assert story.after["deb12-blacklist"].ok


def test_kernel_with_every_virtio_driver_built_in_needs_nothing(story):
    info = story.info_before["deb12-builtin"]
    (kernel,) = info.kernels
    assert kernel.builtin == ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci", "virtio_ring", "virtio"]
    assert kernel.needed == [] and kernel.initrd == "" and info.to_declare == []
    assert story.after["deb12-builtin"].ok and story.after["deb12-builtin"].initrd == ""  # booted without one


def test_builtin_drivers_of_a_real_kernel_are_reported_not_demanded(story):
    # Debian 13's kernel has virtio, virtio_ring and virtio_pci built in (modules.builtin)
    (kernel,) = story.info_before["deb13-itools"].kernels
    assert kernel.builtin == ["virtio_pci", "virtio_ring", "virtio"]
    assert not set(kernel.builtin) & set(kernel.needed)
    assert story.info_before["deb13-itools"].to_declare == ["virtio_blk", "virtio_scsi", "virtio_net"]


def expected_status(h: hosts.HostSpec, after: bool) -> str:
    if h.expect == "fails":
        return "unsupported"
    return "compliant" if after or h.expect == "compliant" else "drifted"


@pytest.mark.parametrize("when", ["before", "after"])
def test_check_cli_over_ssh_exit_code_and_every_report(story, when):
    import jsonschema
    from prometheus_client.parser import text_string_to_metric_families

    run = story.check_before if when == "before" else story.check_after
    assert run.returncode == 3, run.stdout + run.stderr  # the unsupported hosts are the worst, before and after
    data = json.loads((REPORTS / f"check-{when}.json").read_text())
    schema = json.loads((ROOT / "schemas" / "drift-report.schema.json").read_text())
    jsonschema.validate(data, schema)
    status = {row["host"]: row["status"] for row in data["hosts"]}
    assert status == {h.name: expected_status(h, when == "after") for h in hosts.HOSTS}
    assert data["exit_code"] == 3 and data["summary"]["error"] == 0
    for h in hosts.HOSTS:
        assert h.name in run.stdout
    lines = run.stdout.splitlines()
    if when == "before":
        assert lines[-1].startswith(f"{len(hosts.HOSTS)} hosts: ")
    else:  # compared with the check before the deploy (--previous): every fixed host got better
        fixed = sorted(h.name for h in hosts.HOSTS if expected_status(h, False) == "drifted")
        assert lines[-3].startswith(f"{len(hosts.HOSTS)} hosts: ") and lines[-2].startswith("Changed since the ")
        assert lines[-1] == f"  better: {len(fixed)}: " + ", ".join(f"{n} (drifted -> compliant)" for n in fixed)
        changes = data["changes"]["hosts"]
        assert data["changes"]["since"] and {c["host"] for c in changes} == set(fixed)
        assert {(c["before"], c["after"], c["change"]) for c in changes} == {("drifted", "compliant", "better")}

    prom = text_string_to_metric_families((REPORTS / f"check-{when}.prom").read_text())
    samples = {(s.labels["host"], s.labels["status"]): s.value for f in prom if f.name == "kvm_drivers_host_status"
               for s in f.samples}  # fmt: skip
    assert {h for (h, st), v in samples.items() if v == 1 and st == "compliant"} == {
        n for n, st in status.items() if st == "compliant"}
    cases = ET.parse(REPORTS / f"check-{when}.xml").getroot().iter("testcase")
    failing = {c.get("name") for c in cases if c.find("failure") is not None}
    assert failing == {n for n, st in status.items() if st in ("drifted", "unsupported")}
    page = (REPORTS / f"check-{when}.html").read_text()
    assert page.count('data-status="drifted"') == sum(st == "drifted" for st in status.values())
    assert (REPORTS / f"check-{when}.txt").read_text().strip() == run.stdout.strip()


def test_check_cli_limit_and_empty_scope(story):
    assert story.check_after_fixed.returncode == 0, story.check_after_fixed.stdout + story.check_after_fixed.stderr
    assert story.check_after_fixed.stdout == ""  # --quiet and all compliant: nothing to say
    assert story.check_nothing.returncode == 6, story.check_nothing.stderr
    assert "kvm_drivers_check_exit_code 6" in (REPORTS / "check-nothing.prom").read_text()


def test_check_cli_changes_nothing(story):
    assert story.sums_before == story.sums_dry  # kvm-drivers check and --dry both ran in between


def crafted_shell(lines: list[str]):
    """A host whose root login shell prints a crafted answer whatever it is asked (its sshd runs
    'SHELL -c COMMAND'): what a compromised host can send kvm-drivers."""

    def setup(root) -> None:
        (root / "root/crafted.txt").write_text("\n".join(lines) + "\n")
        shell = root / "usr/local/sbin/kvm-crafted-shell"
        shell.write_text("#!/bin/sh\n# lab: a compromised host's answer to every command\nexec cat /root/crafted.txt\n")
        shell.chmod(0o755)
        passwd = root / "etc/passwd"
        text = passwd.read_text()
        passwd.write_text(text.replace(":/root:/bin/bash\n", ":/root:/usr/local/sbin/kvm-crafted-shell\n", 1))

    return setup


def test_check_over_the_lab_with_a_crafted_full_cap_host_finishes_in_30_s(lab, story, tmp_path):
    # Issue 18 "Done when": kvm-drivers check --timeout 5 over the lab plus one host sending a
    # crafted answer at the full cap finishes in under 30 s, with every other host checked. Here with
    # --timeout 10: the suite's other worker boots up to six QEMU guests meanwhile on these two cores,
    # and a real host's answer once took more than 5 s then (2026-12-07); the crafted one needs 26 s.
    from tests import crafted

    lines = crafted.answer("nested-if")  # about 26 s of CPU to read in full: far past 5 s
    bad = hosts.variant("deb12-itools", "crafted-cap", "127.0.41.1", crafted_shell(lines))
    hosts.start(bad)
    try:
        inv = hosts.write_inventory([*lab, bad], "crafted")
        start = time.monotonic()
        run = check_cli(str(inv), "--timeout", "10", "--report", str(tmp_path / "r.json"), timeout=300)
        took = time.monotonic() - start
    finally:
        hosts.stop(bad)
    assert took < 30, f"{took:.1f} s\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    rows = {r["host"]: r for r in json.loads((tmp_path / "r.json").read_text())["hosts"]}
    assert rows[bad.name]["status"] == "error" and "timed out after 10 s" in rows[bad.name]["errors"][0]
    assert {n: r["status"] for n, r in rows.items() if n != bad.name} == {
        h.name: expected_status(h, True) for h in hosts.HOSTS}
