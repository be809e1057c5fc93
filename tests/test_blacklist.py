"""facts/blacklist.py, the judge of module configuration lines and command-line words, and its awk
twin in hostside/lib.sh (KVM_CONF), which finds those lines on the hosts and judges a rebuilt image:
the twin must never let pass a line the judge stops.

Real-shaped lines: where a line says where it comes from, it is a real line from a public
repository with the module it stops replaced by a virtio driver.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from kvm_drivers import hostside
from kvm_drivers.facts import blacklist as bl

WANTED = ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci", "virtio_ring", "virtio"]

STOPPED = [
    # compliance-as-code's remediation for kernel_module_cramfs_disabled (redteam-project/sckg,
    # data/compliance_as_code/build/fedora/fixes/bash/kernel_module_cramfs_disabled.sh) and the CIS
    # scripts (Joycewamere/Hardening project12: /etc/modprobe.d/CIS.conf)
    ("install virtio_blk /bin/true", "virtio_blk"),
    ("install virtio_blk /bin/false", "virtio_blk"),
    ("install virtio_blk true", "virtio_blk"),  # no path
    ("install virtio_pci :", "virtio_pci"),
    ("install virtio_net /bin/echo virtio_net is disabled", "virtio_net"),
    ("install virtio_net exit 1", "virtio_net"),
    ("install virtio_scsi", None),  # no command: kmod and module-init-tools ignore the line
    ("install virtio_scsi ", "virtio_scsi"),  # an empty command (module-init-tools runs it): a doubt
    # kingfs/w510 hw.info/logs/modprobe.d (alsa-base.conf): another module's load
    ("install virtio_net /sbin/modprobe snd-card-0", "virtio_net"),
    ("install virtio_net /sbin/modprobe virtio_net", "virtio_net"),  # no --ignore-install: loops
    ("install virtio_blk /sbin/modprobe -r virtio_blk", "virtio_blk"),
    ("install virtio_blk /sbin/modprobe -C /etc/x.conf -i virtio_blk", "virtio_blk"),  # another config: a doubt
    ("install virtio_blk /bin/true || /sbin/modprobe --ignore-install virtio_blk", "virtio_blk"),
    ("install virtio_blk /sbin/setup && /sbin/modprobe --ignore-install virtio_blk", "virtio_blk"),
    ("install virtio_blk /sbin/modprobe --ignore-install virtio_blk &", "virtio_blk"),  # in the background
    ("install virtio_blk /sbin/modprobe --ignore-install virtio_blk &&", "virtio_blk"),  # sh refuses it
    ("install virtio_blk true ;; /sbin/modprobe -i virtio_blk", "virtio_blk"),
    ("install virtio_blk echo '; /sbin/modprobe -i virtio_blk'", "virtio_blk"),  # quoted: one echo
    ("install virtio_blk /bin/true # /sbin/modprobe -i virtio_blk", "virtio_blk"),  # a comment
    ("install virtio* /bin/true", "virtio_blk"),  # install names are patterns (fnmatch)
    ("install virtio_[bn]* /bin/true", "virtio_net"),
    ("blacklist virtio_blk", "virtio_blk"),
    ("blacklist virtio-blk", "virtio_blk"),  # dashes are underscores
    ("  blacklist\tvirtio_net  # no network on this one", "virtio_net"),
    ("blacklist virtio*", None),  # blacklist compares names exactly
    ("blacklist virtio_blk.ko", None),
    # the nouveau idiom (alias NAME off) and another target
    ("alias virtio_net off", "virtio_net"),
    ("alias virtio-pci off", "virtio_pci"),
    ("alias virtio_blk virtio_scsi", "virtio_blk"),
    ("alias virtio_blk virtio_blk", None),
    ("alias virtio_blk", None),  # no target: a syntax error
    ("alias eth0 virtio_net", None),  # CentOS 6 modprobe.conf: a name for virtio_net, not a stop
    ("alias scsi_hostadapter virtio_blk", None),
    ("# blacklist virtio_blk", None),
    ("#blacklist virtio_blk", None),
    ("options virtio_blk queue_depth=64", None),
    ("softdep virtio_blk pre: virtio_ring", None),
    ("remove virtio_blk /bin/true", None),
    ("blacklist virtio_blk]", None),  # kmod refuses the name
]

LOADED = [
    # 0DayProtect/NH70RA nil/hw.info/hwprob/HW.PROBE/logs/modprobe.d (broadcom-sta-common.conf,
    # nvdimm-security.conf): pass-through install commands
    "install virtio_net /sbin/modprobe --ignore-install virtio_net $CMDLINE_OPTS",
    "install virtio_blk /usr/bin/ndctl load-keys ; /sbin/modprobe --ignore-install virtio_blk $CMDLINE_OPTS",
    # kingfs/w510 (alsa-base.conf): loads it, then others
    "install virtio_net /sbin/modprobe --ignore-install virtio_net $CMDLINE_OPTS && "
    "{ /sbin/modprobe --quiet --use-blacklist failover ; : ; }",
    "install virtio_blk modprobe -i virtio-blk",
    "install virtio_blk /sbin/modprobe -qi virtio_blk",
    "install virtio_blk /sbin/modprobe -i -- virtio_blk",
    "install virtio_blk /sbin/modprobe --ignore-install $MODPROBE_MODULE",
    "install virtio_blk exec /sbin/modprobe --ignore-install virtio_blk",
    "install virtio_blk /sbin/modprobe --ignore-install virtio_blk | logger -t virtio",
    "install virtio_blk insmod /lib/modules/$(uname -r)/kernel/drivers/block/virtio_blk.ko",
    "install virtio_blk /sbin/modprobe --ignore-install virtio_blk \"$CMDLINE_OPTS\"",
]


@pytest.mark.parametrize("line,driver", STOPPED, ids=[x for x, _ in STOPPED])
def test_lines_that_stop_a_driver(line, driver):
    got = bl.stops([line], WANTED)
    if driver is None:
        assert got == []
    else:
        assert (driver, line) in got
        assert all(text == line for _, text in got)


@pytest.mark.parametrize("line", LOADED)
def test_install_commands_that_load_the_driver_do_not_stop_it(line):
    assert bl.stops([line], WANTED) == []


def test_continuation_lines_are_one_line_and_a_comment_swallows_the_next():
    lines = ["# disabled \\", "blacklist virtio_blk", "install virtio_net \\", "    /bin/false", "blacklist \\\\",
             "blacklist virtio_pci"]  # fmt: skip
    assert bl.logical_lines(lines)[1] == (3, "install virtio_net     /bin/false", "install virtio_net     /bin/false")
    assert bl.stops(lines, WANTED) == [("virtio_net", "install virtio_net     /bin/false"),
                                       ("virtio_pci", "blacklist virtio_pci")]  # fmt: skip
    # a backslash before another character is dropped, as kmod reads it
    assert bl.stops(["blacklist virtio\\_blk"], WANTED) == [("virtio_blk", "blacklist virtio\\_blk")]
    # the lines as gather.sh sends them (already joined) give the same verdict
    assert bl.stops(["install virtio_net     /bin/false"], WANTED)[0][0] == "virtio_net"


def test_reasons_say_why():
    why = {d: w for d, _, w in bl.reasons(["install virtio_pci :", "alias virtio_net off", "blacklist virtio_blk"],
                                          WANTED)}  # fmt: skip
    assert "runs ':'" in why["virtio_pci"] and "'off'" in why["virtio_net"] and "udev" in why["virtio_blk"]


def test_wanted_names_are_normalised():
    assert bl.stops(["blacklist virtio_blk"], ["virtio-blk"]) == [("virtio_blk", "blacklist virtio_blk")]
    assert bl.stops(["blacklist virtio_blk"], ["virtio_blk.ko"]) == [("virtio_blk", "blacklist virtio_blk")]


CMDLINE = "BOOT_IMAGE=/vmlinuz-6.1 root=/dev/vda1 ro quiet modprobe.blacklist=floppy,virtio_scsi " \
          "module_blacklist=virtio_ring rd.driver.blacklist=virtio-pci rd.driver.blacklist=virtio_net " \
          "rdblacklist=virtio blacklist=virtio_blk"  # fmt: skip


def test_command_line_forms():
    got = bl.cmdline_stops(bl.split_cmdline(CMDLINE), WANTED)
    assert sorted(got) == sorted([
        ("virtio_scsi", "modprobe.blacklist=floppy,virtio_scsi"),
        ("virtio_ring", "module_blacklist=virtio_ring"),
        ("virtio_pci", "rd.driver.blacklist=virtio-pci"),  # dracut writes "blacklist virtio-pci": kmod's names
        ("virtio_net", "rd.driver.blacklist=virtio_net"),  # given twice: both count
        ("virtio", "rdblacklist=virtio"),
        ("virtio_blk", "blacklist=virtio_blk"),  # initramfs-tools
    ])  # fmt: skip
    # the kernel compares module_blacklist names exactly (module names have underscores); its own
    # parameter names take dashes
    assert bl.cmdline_stops(["module_blacklist=virtio-blk"], WANTED) == []
    assert bl.cmdline_stops(["module-blacklist=virtio_blk"], WANTED) == [("virtio_blk", "module-blacklist=virtio_blk")]
    assert bl.cmdline_stops(['"rd.driver.blacklist=virtio_blk"'], WANTED)[0][0] == "virtio_blk"
    assert bl.cmdline_stops(["virtio_blk.queue_depth=64", "rd.driver.pre=virtio_blk", "blacklist"], WANTED) == []
    assert bl.split_cmdline('a "b c" d="e f"') == ["a", "b c", "d=e f"]


# --- the awk twin ---------------------------------------------------------------------------


def awk_judge(lines: list[str], wanted: list[str], awk: str = "awk") -> set[tuple[int, str]]:
    """(first line number, module) of each line KVM_CONF's judge stops, the lines read as one file."""
    script = hostside.LIB + f'''
{awk} -v want="$W" -v kvm_judge=1 "$KVM_NORM$KVM_CONF"' BEGIN {{ n = split(want, x, " ")
    for (i = 1; i <= n; i++) kvm_w[x[i]] = 1 }} {{ kvm_phys("f", NR, $0) }} END {{ kvm_flush() }}'
'''
    proc = subprocess.run(["sh", "-c", script], input="\n".join(lines) + "\n", capture_output=True, text=True,
                          env={**os.environ, "W": " ".join(wanted)}, check=True)  # fmt: skip
    return {(int(x.split(":")[1]), x.split(":")[2]) for x in proc.stdout.splitlines()}


def awks() -> list[str]:
    found = [a for a in ("mawk", "gawk", "original-awk", "nawk") if shutil.which(a)]
    if shutil.which("busybox"):
        found.append("busybox awk")
    return found or ["awk"]


ALL = [line for line, _ in STOPPED] + LOADED + [
    "install virtio_blk foo(bar) ; /sbin/modprobe -i virtio_blk",
    "install virtio_blk (/sbin/modprobe -i virtio_blk)",
    "install virtio_blk /bin/true || (/sbin/modprobe -i virtio_blk)",
    "install virtio_blk ; /sbin/modprobe -i virtio_blk",
    "install virtio_blk kmod modprobe -i virtio_blk",
    "install virtio_blk insmod /x/virtio_blk.ko.xz",
    "install virtio_blk insmod /x/virtio_blk.ko.foo",
    "install virtio_blk /sbin/modprobe -ai virtio_net virtio_blk",
    "install virtio_blk /sbin/modprobe virtio_blk -i",
    "install virtio_blk X=1 /sbin/modprobe -i virtio_blk",
    "install virtio_[z-a]lk /bin/true",  # a range no awk accepts: every name, the judge decides
    "install virtio_[[:alpha:]lk /bin/true",
    "install virtio_[^b]lk /bin/true",
    "alias virtio_[!x]lk off",
]


@pytest.mark.parametrize("awk", awks())
def test_awk_twin_never_lets_pass_what_the_judge_stops(awk):
    want = WANTED + ["failover"]
    python = {(n, d) for n, _, text in bl.logical_lines(ALL) for d, _ in bl.classify(text, want)}
    shell = awk_judge(ALL, want, awk)
    assert python - shell == set()  # nothing the judge stops gets past the twin
    # and where the twin is stricter, it is on purpose (quotes, $(...): it does not parse them)
    stricter = {ALL[n - 1] for n, _ in shell - python}
    assert stricter <= {LOADED[-2], LOADED[-1], "install virtio_[z-a]lk /bin/true",
                        "install virtio_[[:alpha:]lk /bin/true", "install virtio_[^b]lk /bin/true"}, stricter
