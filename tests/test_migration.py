"""Issue 20 end to end on the control side: a gathered answer with a Xen-era boot path (root= on the
kernel line, fstab and crypttab device names, a Xen alias) read by host_state, planned with and
without the opt-in, and turned into the deploy's fixes (operations/boot_path.host_fixes) and its
closing message (kvm_drivers.deploy.unfixed). The answer is the captured Debian 12 gather output of
tests/fixtures with files and a disks section added as gather.sh sends them.
"""

from __future__ import annotations

import inspect

import pytest

from kvm_drivers.deploy import kvm_drivers, unfixed
from kvm_drivers.facts.state import host_state
from kvm_drivers.facts.wire import parse_snapshot
from kvm_drivers.operations import boot_path as bpo
from kvm_drivers.operations.plan import plan
from kvm_drivers.operations.settings import KEYS, Settings, data_arguments
from tests.fake_connector import gather_output

U_ROOT, U_DATA = "3a5b7c9d-1e2f-4a6b-8c0d-2e4f6a8b0c1d", "949779ce-46aa-434e-8eb0-852514a5d69e"
FSTAB = f"UUID={U_ROOT} / ext4 errors=remount-ro 0 1\n/dev/xvdb1 /data ext4 defaults 0 2\n" \
        "/dev/xvdc1 /scratch ext4 defaults,nofail 0 2\n"  # fmt: skip
MODPROBE = "alias scsi_hostadapter xenblk\n"


def answer(kind: str = "compliant", root: str = "/dev/xvda1") -> list[str]:
    """The captured answer with root= changed, fstab and a modprobe.d file, and the live disks."""
    lines = [line.replace("root=/dev/vda ", f"root={root} ") for line in gather_output(kind)]
    at = lines.index("@@KVM file /etc/os-release")
    disks = ["@@KVM disks", "mount / /dev/xvda1", "mount /data /dev/xvdb1", f"uuid /dev/xvda1 {U_ROOT}",
             f"uuid /dev/xvdb1 {U_DATA}", "efi no", "netgen no"]  # fmt: skip
    files = ["@@KVM file /etc/fstab", *FSTAB.splitlines(), "@@KVM file /etc/modprobe.d/xen.conf", MODPROBE.strip()]
    return lines[:at] + disks + files + lines[at:]


def test_every_setting_of_the_inventory_is_an_argument_of_the_deploy():
    # the deploy file passes data_arguments(host.data) as keywords: a missing parameter failed every host
    params = inspect.signature(inspect.unwrap(kvm_drivers)).parameters
    assert set(data_arguments({})) == set(params) == set(KEYS)
    assert Settings.read(**data_arguments({})) == Settings()
    with pytest.raises(TypeError, match="unknown settings: fix_everything"):
        Settings.read(fix_everything=True)


def test_a_xen_boot_path_is_drifted_and_says_which_setting_fixes_it():
    state = host_state(parse_snapshot(answer()))
    assert not state.errors, state.errors
    the_plan = plan(state, Settings())
    kinds = {(f["kind"], f["where"], f["severity"]) for f in the_plan.boot_path}
    assert ("device-name", "/etc/fstab", "blocks boot") in kinds  # /data, needed at boot
    assert ("device-name", "/boot/grub/grub.cfg", "blocks boot") in kinds  # root= of the default entry
    assert not any("/scratch" in f["text"] for f in the_plan.boot_path if f["severity"] != "advice")  # nofail
    assert the_plan.status == "drifted"
    assert all(not f["fixing"] for f in the_plan.boot_path)
    # without the opt-in nothing is rewritten, and the deploy's last step names what still blocks
    fixes = bpo.host_fixes(state.boot_files, the_plan.boot_path, state.disks)
    assert not fixes.texts and not fixes.moves and not fixes.verify
    left = unfixed(the_plan, fixes)
    assert any("/etc/fstab line 2" in x and "set kvm_fix_device_names" in x for x in left), left


def test_with_the_opt_in_fstab_becomes_uuids_and_the_generated_grub_cfg_is_refused():
    state = host_state(parse_snapshot(answer()))
    the_plan = plan(state, Settings(fix_device_names=True))
    fixes = bpo.host_fixes(state.boot_files, the_plan.boot_path, state.disks)
    was = state.boot_files["/etc/fstab"]
    assert was and was.rstrip("\n") == FSTAB.rstrip("\n")
    assert fixes.texts["/etc/fstab"] == was.replace("/dev/xvdb1 ", f"UUID={U_DATA} ")
    assert fixes.verify == {U_DATA: "/dev/xvdb1"}
    assert "/etc/modprobe.d/xen.conf" in fixes.texts and "xenblk" not in fixes.texts["/etc/modprobe.d/xen.conf"]
    assert bpo.needs_rebuild(fixes)  # the initrd carries modprobe.d
    # root= lives only in the generated grub.cfg: refused, and the deploy says so at the end
    assert any("/boot/grub/grub.cfg" in r and "generated" in r for r in fixes.refused), fixes.refused
    assert any(x.startswith("fix refused: /boot/grub/grub.cfg") for x in unfixed(the_plan, fixes))


def test_uuid_names_survive_and_leave_nothing_to_fix():
    state = host_state(parse_snapshot(answer(root=f"UUID={U_ROOT}")))
    the_plan = plan(state, Settings(fix_device_names=True))
    assert not any(f["where"] == "/boot/grub/grub.cfg" for f in the_plan.boot_path)


def test_with_kvm_regenerate_grub_the_generated_grub_cfg_is_regenerated_not_refused():
    state = host_state(parse_snapshot(answer()))
    the_plan = plan(state, Settings(fix_device_names=True, regenerate_grub=True))
    fixes = bpo.host_fixes(state.boot_files, the_plan.boot_path, state.disks, regenerate_grub=True)
    assert fixes.regenerate == {"/boot/grub/grub.cfg": ["root=/dev/xvda1"]}
    assert fixes.refused == ["/etc/fstab line 3: device-to-uuid: no UUID is known for /dev/xvdc1 (not mounted there, "
                             "or blkid gave none)"]  # /scratch (nofail): no disk holds it now
    assert "/boot/grub/grub.cfg" not in fixes.texts and fixes.olds["/boot/grub/grub.cfg"]
    assert not any("grub.cfg" in x for x in unfixed(the_plan, fixes))  # root= is fixed by this run


def test_with_kvm_set_default_kernel_the_plan_is_for_the_kernel_that_will_boot():
    """The default kernel has no virtio_blk; GRUB legacy's default line is to name the older one: the
    plan handles that one (kvm_kernels: default), and without the opt-in the host is an error."""
    from kvm_drivers.facts.state import HostState

    drivers = ["virtio_blk", "virtio_pci"]
    old = {"version": "4.4.0-new", "default": True, "initrd": "/boot/initrd-4.4.0-new", "in_initrd": [],
           "kinds": {"virtio_blk": "absent", "virtio_pci": "absent"}}
    good = {"version": "4.3.0-old", "initrd": "/boot/initrd-4.3.0-old", "in_initrd": [],
            "kinds": {"virtio_blk": "module", "virtio_pci": "module"},
            "closures": {"virtio_blk": ["virtio_blk"], "virtio_pci": ["virtio_pci"]}}
    entries = [{"title": t, "kernel": k, "initrd": "", "path": p, "origin": "/boot/grub/menu.lst"}
               for t, k, p in (("new", "4.4.0-new", "0"), ("old", "4.3.0-old", "1"))]  # fmt: skip
    finding = {"kind": "no-virtio-kernel", "severity": "blocks boot", "where": "/boot/config-4.4.0-new", "line": 0,
               "text": "4.4.0-new", "message": "the default kernel 4.4.0-new has no virtio_blk; best: 4.3.0-old",
               "fix": {"action": "set-default-kernel", "path": "/boot/grub/menu.lst", "line": 2,
                       "old": "default 0", "new": "default 1", "copies": []}}  # fmt: skip
    state = HostState.from_dict({
        "drivers": drivers, "distro": {"id": "sles", "name": "SLES", "version": "11.4", "family": "suse-legacy"},
        "generator": "suse-mkinitrd", "kernels": [old, good], "boot_path": [finding], "boot_free_kib": 1 << 20,
        "boot": {"source": "/boot/grub/menu.lst", "default_kernel": "4.4.0-new", "entries": entries},
        "declared": {"path": "/etc/sysconfig/kernel", "drivers": []},
    })  # fmt: skip
    fixing = plan(state, Settings.read(drivers, None, "default", set_default_kernel=True))
    assert fixing.errors == [] and fixing.status == "drifted", fixing.errors
    assert [k.version for k in fixing.kernels] == ["4.3.0-old"] and fixing.to_rebuild == ["4.3.0-old"]
    assert fixing.boot_path[0]["opt_in"] == "kvm_set_default_kernel" and fixing.boot_path[0]["fixing"] is True
    by_hand = plan(state, Settings.read(drivers, None, "default"))
    assert by_hand.status == "error" and any("4.4.0-new, which the default boot entry boots" in e
                                             for e in by_hand.errors), by_hand.errors  # fmt: skip
