"""The lab's boot harness itself: it must not consult our parsers, and it reads GRUB's and the
probe's output correctly. Runs without the lab (no root, no QEMU)."""

from __future__ import annotations

import ast
import shlex
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.lab import blsmodel, boot, hosts

LAB = Path(__file__).parent / "lab"


@pytest.mark.parametrize("module", ["boot.py", "blsmodel.py"])
def test_what_to_boot_is_never_asked_of_our_parsers(module):
    tree = ast.parse((LAB / module).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.split(".")[0] == "facts"}, imported
    assert "parse_boot" not in (LAB / module).read_text()


# Excerpts of a real serial console (GRUB 2.06 with debug=linux, then the kernel) of a lab boot.
CONSOLE = """KVM-GRUB configfile (hd0)/boot/grub/grub.cfg
  Booting `Advanced options for Debian GNU/Linux'
  Booting `Debian GNU/Linux, with Linux 6.1.0-50-amd64'
loader/i386/linux.c:893: bzImage, setup=0x4e00, size=0x3f97000
loader/i386/linux.c:1154: Initrd, addr=0x37a2a000, size=0x5c44c7
[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz-6.1.0-50-amd64 root=/dev/vda ro quiet
"""
PROBE = """root: /dev/vda ext4
kernel: 6.1.0-50-amd64
cmdline: BOOT_IMAGE=/boot/vmlinuz-6.1.0-50-amd64 root=/dev/vda ro quiet
initrd-freed: 5908
virtio-drivers: virtio_blk virtio_net
bound: virtio0 virtio_net
bound: virtio1 virtio_blk
fstab: mounted
done
"""
FILES = {"/boot/initrd.img-6.1.0-50-amd64": 6046919, "/boot/initrd.img-6.1.0-47-amd64": 6046000,
         "/boot/vmlinuz-6.1.0-50-amd64": 8222656}  # fmt: skip


def test_result_names_grubs_entry_initrd_and_what_the_probe_saw():
    r = boot.parse_result(hosts.spec("deb12-default-submenu"), CONSOLE, PROBE, FILES, 20.0)
    assert r.entry == "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-50-amd64"
    assert r.grub_initrd_size == 6046919 and r.initrd == "/boot/initrd.img-6.1.0-50-amd64"
    assert r.kernel == "6.1.0-50-amd64" and r.boot_image == "/boot/vmlinuz-6.1.0-50-amd64"
    assert r.ok and r.bound == {"virtio0": "virtio_net", "virtio1": "virtio_blk"}


def test_an_fstab_entry_that_does_not_mount_fails_the_boot_proof():
    probe = PROBE.replace("fstab: mounted", "fstab: FAILED mount: /data: special device /dev/xvdb1 does not exist.")
    r = boot.parse_result(hosts.spec("deb12-itools"), CONSOLE, probe, FILES, 20.0)
    assert not r.ok and r.cause == "fstab: FAILED mount: /data: special device /dev/xvdb1 does not exist."
    assert not boot.parse_result(hosts.spec("deb12-itools"), CONSOLE, PROBE.replace("fstab: mounted\n", ""),
                                 FILES, 20.0).ok  # an older probe's answer proves nothing about fstab


def test_without_grubs_size_the_initrd_is_named_by_the_pages_the_kernel_freed():
    console = CONSOLE.replace("loader/i386/linux.c:1154: Initrd, addr=0x37a2a000, size=0x5c44c7\n", "")
    r = boot.parse_result(hosts.spec("sles11-vmx"), console, PROBE, FILES, 20.0)
    assert r.grub_initrd_size is None
    assert r.initrd.split() == ["/boot/initrd.img-6.1.0-50-amd64", "/boot/initrd.img-6.1.0-47-amd64"]  # same pages


def test_a_boot_that_never_reached_root_is_a_failure_with_its_cause():
    console = CONSOLE + "Gave up waiting for root file system device.\n"
    console += "ALERT!  /dev/vda does not exist.  Dropping to a shell!\n"
    r = boot.parse_result(hosts.spec("deb12-itools"), console, "", FILES, 50.0)
    assert not r.ok and not r.kernel
    assert r.cause.startswith("ALERT!  /dev/vda does not exist")
    assert "FAILED" in r.summary() and "initrd.img-6.1.0-50-amd64" in r.summary()


def test_grub_script_hands_over_to_the_hosts_own_configuration():
    script = boot.grub_script()
    assert 'configfile "$prefix/grub.cfg"' in script and 'legacy_configfile "$prefix/menu.lst"' in script
    assert "set prefix=\"($root)$kvm_dir\"" in script  # so that the host's load_env reads ITS grubenv
    assert "linux " not in script and "initrd " not in script  # it never names a kernel or an initrd


def test_every_host_has_a_known_boot_path_and_layout():
    for h in hosts.HOSTS:
        assert h.loader in boot.LOADERS and h.disk in ("whole", "split", "part", "esp", "btrfs"), h


@pytest.mark.skipif(not shutil.which("/usr/bin/python3") or not Path("/usr/lib/python3/dist-packages/rpm").is_dir(),
                    reason="Debian's python3-rpm is not installed")
def test_bls_model_sorts_with_rpms_own_version_comparison():
    stems = ["4b7f-4.18.0-240.el8.x86_64", "4b7f-4.18.0-240.1.1.el8_3.x86_64", "4b7f-4.18.0-193.el8.x86_64"]
    assert blsmodel.rpm_order(stems) == [stems[1], stems[0], stems[2]]
    assert blsmodel.split_nvr(stems[1]) == ("4b7f", "4.18.0", "240.1.1.el8_3.x86_64")


def test_bls_model_replaces_only_the_blscfg_line(tmp_path):
    (tmp_path / "a-6.1.0-47-amd64.conf").write_text(
        "title Rocky Linux (x)\nversion x\nlinux /vmlinuz-6.1.0-47-amd64\ninitrd /initramfs-6.1.0-47-amd64.img\n"
        "options root=UUID=u ro\ngrub_arg --unrestricted\ngrub_class rocky\n"
    )
    cfg = "set timeout=5\ninsmod blscfg\nblscfg\nset after=1\n"
    out = blsmodel.translate(cfg, tmp_path)
    assert "blscfg\n" not in out and out.startswith("set timeout=5\n") and out.endswith("set after=1\n")
    assert "menuentry 'Rocky Linux (x)' --class rocky --unrestricted --id 'a-6.1.0-47-amd64' {" in out
    assert "\tlinux /vmlinuz-6.1.0-47-amd64 root=UUID=u ro\n\tinitrd /initramfs-6.1.0-47-amd64.img\n" in out


# GRUB 2.14 (blscfg hosts) prints no "Booting" line and wraps its initrd line.
CONSOLE_214 = (
    "      previous menu.  \x1b[5;80H \x1b[7m\x1b[5;3H*Rocky Linux (6.1.0-50-amd64)          \x1b[m\x1b[6;3H"
    " Rocky Linux (6.1.0-47-amd64)          \x1b[m   The highlighted entry will be executed automatically in 0s.\n"
    "loader/i386/linux.c:1154:linux: Initrd (0x3674d000) at 0x3674d000,\r\n\r\nsize=0xc500ff\r\n"
)


def test_grub_214_output_names_the_highlighted_entry_and_the_initrd():
    files = {"/boot/initramfs-6.1.0-50-amd64.img": 0xC500FF, "/boot/initramfs-6.1.0-47-amd64.img": 0xC500FE}
    r = boot.parse_result(hosts.spec("rocky9-counting"), CONSOLE_214, "", files, 9.0)
    assert r.entry == "Rocky Linux (6.1.0-50-amd64)"
    assert r.initrd == "/boot/initramfs-6.1.0-50-amd64.img"


def test_an_emulator_timer_panic_boots_again_once_on_the_same_disk(tmp_path, monkeypatch):
    # QEMU stands in as a script: the first start panics in the emulated kernel's timer check, the
    # second boots (prints GRUB's line). Any other failure, or a second panic, is not started again.
    monkeypatch.setattr(boot, "STATE", tmp_path)
    monkeypatch.setattr(boot, "FAILED_GRACE", 0.2)  # the console after the panic line says nothing more here
    monkeypatch.setattr(boot, "read_probe", lambda disk: PROBE)
    (tmp_path / "hosts" / "deb12-itools").mkdir(parents=True)
    image = tmp_path / "disk.img"
    starts = tmp_path / "starts"

    def run(then: str) -> tuple[boot.BootResult, int]:
        starts.write_text("")
        image.write_text("disk")
        script = (f'echo x >> {starts}; if [ "$(wc -l < {starts})" = 1 ]; then '
                  "echo \"Kernel panic - not syncing: IO-APIC + timer doesn't work!\"; exec sleep 60; "
                  f"else printf '%s' {shlex.quote(then)}; fi")  # fmt: skip
        launched = boot.Launched(hosts.spec("deb12-itools"), boot.Disk(image, ""), {}, None, 0.0, 30,
                                 cmd=["sh", "-c", script])  # type: ignore[arg-type]  # fmt: skip
        launched._start()
        return launched.wait(), len(starts.read_text().split())

    result, started = run(CONSOLE)
    assert started == 2 and result.ok, result.summary()
    assert result.entry == "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-50-amd64"
    assert "started again on the same disk" in (tmp_path / "hosts" / "deb12-itools" / "boot.log").read_text()
    monkeypatch.setattr(boot, "read_probe", lambda disk: "")  # the second panic: no probe result
    result, started = run("Kernel panic - not syncing: IO-APIC + timer doesn't work!\n")
    assert started == 2 and not result.ok  # twice: a failure like any other


# dracut (with systemd) on a quiet console says nothing until its initqueue has waited two thirds of
# rd.retry for the root device; these are its first lines (a real lab boot of deb12-dracut, no virtio).
DRACUT_GIVING_UP = r"""[  282.546412] dracut-initqueue[134]: Warning: dracut-initqueue: timeout, still waiting for following initqueue hooks:
[  282.583455] dracut-initqueue[134]: Warning: /lib/dracut/hooks/initqueue/finished/devexists-\x2fdev\x2fvda.sh: "if ! grep -q After=remote-fs-pre.target /run/systemd/generator/systemd-cryptsetup@*.service 2>/dev/null; then
[  282.594160] dracut-initqueue[134]:     [ -e "/dev/vda" ]
[  282.595429] dracut-initqueue[134]: fi"
[  282.617499] dracut-initqueue[134]: Warning: dracut-initqueue: starting timeout scripts
"""  # noqa: E501


def test_dracut_starting_its_timeout_scripts_ends_the_boot_as_a_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(boot, "STATE", tmp_path)
    monkeypatch.setattr(boot, "FAILED_GRACE", 0.2)
    monkeypatch.setattr(boot, "read_probe", lambda disk: "")  # root never reached: no probe result
    (tmp_path / "hosts" / "deb12-dracut").mkdir(parents=True)
    image = tmp_path / "disk.img"
    image.write_text("disk")
    script = f"printf '%s' {shlex.quote(CONSOLE + DRACUT_GIVING_UP)}; exec sleep 60"  # then it would wait on
    launched = boot.Launched(hosts.spec("deb12-dracut"), boot.Disk(image, ""), FILES, None, 0.0, 30,
                             cmd=["sh", "-c", script])  # type: ignore[arg-type]  # fmt: skip
    launched._start()
    result = launched.wait()
    assert result.seconds < 10, result.summary()  # QEMU killed on that line, not at the time limit
    assert not result.ok and not result.kernel and result.entry, result.summary()
    assert result.cause.endswith("dracut-initqueue: starting timeout scripts"), result.cause
    assert "time limit" not in result.log


def test_the_lab_says_it_is_still_up_and_how_to_stop_it():
    from tests.lab.__main__ import summary

    assert summary(hosts.HOSTS[:3]).startswith(f"== the lab is up: 3 of {len(hosts.HOSTS)} hosts still running")
    assert summary(hosts.HOSTS[:3]).endswith("Stop them with: make down")
    assert summary([]) == "== the lab is down: no lab host is running"


def fake_launch(tmp_path, monkeypatch, name: str, limit: int, cmd: list[str]) -> boot.Launched:
    """A boot of lab host name whose QEMU is cmd (a stand-in script), with a time limit of limit s; not started."""
    monkeypatch.setattr(boot, "STATE", tmp_path)
    monkeypatch.setattr(boot, "read_probe", lambda disk: "")
    (tmp_path / "hosts" / name).mkdir(parents=True)
    image = tmp_path / "disk.img"
    image.write_text("disk")
    return boot.Launched(hosts.spec(name), boot.Disk(image, ""), FILES, None, 0.0, limit, cmd=cmd)  # type: ignore


def test_a_boot_is_stopped_at_its_time_limit_even_before_anyone_waits_for_it(tmp_path, monkeypatch):
    # boots started in the background are waited for much later: the limit holds from their start
    launched = fake_launch(tmp_path, monkeypatch, "deb12-dracut", 1, ["sh", "-c", "echo GRUB; exec sleep 60"])
    launched._start()
    time.sleep(1.5)
    assert launched.proc.poll() is not None  # killed at 1 s, nobody waiting
    result = launched.wait()
    assert not result.ok and result.seconds < 5 and "[time limit reached]" in result.log


# QEMU stands in as a script: GRUB's menu counting down on one line that does not end, then the entry
# booted if Enter came (as GRUB does for Enter and for the end of the countdown alike), else nothing.
FAKE_GRUB_MENU = r"""
import os, sys
sys.stdout.write("   *Debian GNU/Linux   The highlighted entry will be executed automatically in 5s.")
sys.stdout.flush()
key = os.read(0, 1)
print("\n  Booting `Debian GNU/Linux'" if key == b"\r" else "\nno key")
"""


@pytest.mark.parametrize("enter", [True, False])
def test_enter_is_pressed_at_grubs_countdown_unless_fallback_is_named(tmp_path, monkeypatch, enter):
    launched = fake_launch(tmp_path, monkeypatch, "deb12-itools", 3, [sys.executable, "-c", FAKE_GRUB_MENU])
    launched.enter = enter
    launched._start()
    result = launched.wait()
    if enter:
        assert "Booting `Debian GNU/Linux'" in result.log and result.seconds < 2.5, result.log
    else:  # no key: it counts down to its time limit
        assert "Booting" not in result.log and "[time limit reached]" in result.log


# The default names a submenu: Enter at the countdown enters it, and GRUB, a key having been pressed,
# shows the submenu without a countdown (menu.c unsets timeout): the lab presses Enter there too.
FAKE_GRUB_SUBMENU = r"""
import os, sys
sys.stdout.write("Use the ^ and v keys to select which entry is highlighted.\n   *Advanced options   The "
                 "highlighted entry will be executed automatically in 5s.")
sys.stdout.flush()
if os.read(0, 1) != b"\r":
    sys.exit("no key")
sys.stdout.write("\n\n   *Debian GNU/Linux, with Linux 6.1.0-50-amd64\nUse the ^ and v keys to select which entry is "
                 "highlighted.\n")
sys.stdout.flush()
print("\n  Booting `Debian GNU/Linux, with Linux 6.1.0-50-amd64'" if os.read(0, 1) == b"\r" else "no key")
"""


def test_a_submenu_entered_with_enter_gets_enter_too(tmp_path, monkeypatch):
    launched = fake_launch(tmp_path, monkeypatch, "deb12-default-submenu", 5,
                           [sys.executable, "-c", FAKE_GRUB_SUBMENU])  # fmt: skip
    launched._start()
    result = launched.wait()
    assert "Booting `Debian GNU/Linux, with Linux 6.1.0-50-amd64'" in result.log, result.log
    assert result.seconds < 4


def test_an_entry_chosen_with_enter_is_read_from_each_menu_grub_drew():
    # GRUB prints no "Booting" line for an entry chosen with Enter: the highlighted entry of each menu
    # (the top menu, then the submenu it entered) names it; the kernel's own lines are not menus
    top = ("Use the ^ and v keys to select which entry is highlighted.\n \x1b[5;3H*Advanced options for Debian "
           "GNU/Linux      \x1b[m  Debian GNU/Linux     The highlighted entry will be executed automatically in 5s.")
    sub = ("\x1b[2JUse the ^ and v keys to select which entry is highlighted.\n \x1b[5;3H*Debian GNU/Linux, with Linux "
           "6.1.0-50-amd64     \x1b[m  Debian GNU/Linux, with Linux 6.1.0-47-amd64   \n")
    kernel = "loader/i386/linux.c:893: bzImage\n[    0.000000] *ERROR* not a menu   entry\n"
    r = boot.parse_result(hosts.spec("deb12-default-submenu"), top + sub + kernel, PROBE, FILES, 20.0)
    assert r.entry == "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-50-amd64"
    top = top.replace("Advanced options for ", "")
    r = boot.parse_result(hosts.spec("deb12-itools"), top + kernel, PROBE, FILES, 9.0)
    assert r.entry == "Debian GNU/Linux"


def test_a_host_naming_grubs_fallback_gets_no_key(tmp_path):
    (tmp_path / "boot/grub").mkdir(parents=True)
    (tmp_path / "boot/grub/grub.cfg").write_text("set default=0\nmenuentry 'a' {\n}\n")
    assert not boot.mentions_fallback(tmp_path)
    (tmp_path / "boot/grub/grub.cfg").write_text("set default=0\nset fallback=1\nmenuentry 'a' {\n}\n")
    assert boot.mentions_fallback(tmp_path)
