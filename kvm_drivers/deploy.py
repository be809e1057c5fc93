"""
The kvm-drivers deploy as a function another pyinfra project can call with its own settings.

.. code:: python

    from kvm_drivers.deploy import kvm_drivers

    kvm_drivers(extra=["virtio_console"], kernels="default")

Per host: one remote command gathers the state (``facts.kvm_drivers.gather_state``), a pure
``plan`` decides, then only the operations the plan needs are queued (a compliant host gets none):
disable blocking modprobe.d lines (only with ``remove_blacklists``), declare the drivers, rebuild
each initrd that lacks one, and a summary of what was done. A host that cannot be fully checked
or safely changed fails alone, with the cause, and nothing is changed on it.
"""

from __future__ import annotations

import math
from typing import Any

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import python

from kvm_drivers.facts.boot_path import ADVICE
from kvm_drivers.facts.kvm_drivers import gather_state
from kvm_drivers.operations import boot_path as bpo
from kvm_drivers.operations import kvm_drivers as ops
from kvm_drivers.operations.plan import Plan, finding_text, plan
from kvm_drivers.operations.settings import CHANGE_TIMEOUT, GATHER_TIMEOUT, Settings


@deploy("Make the host boot on KVM")
def kvm_drivers(
    drivers: list[str] | None = None,
    extra: list[str] | None = None,
    kernels: str | list[str] = "all",
    remove_blacklists: bool = False,
    gather_timeout: float = GATHER_TIMEOUT,
    change_timeout: float = CHANGE_TIMEOUT,
    fix_device_names: bool = False,
    fix_network: bool = False,
    fix_efi_fallback: bool = False,
    regenerate_grub: bool = False,
    set_default_kernel: bool = False,
) -> None:
    """
    Guarantee the virtio drivers in the initrd of every handled kernel, and declare them so that
    later rebuilds keep them.

    + drivers: replaces the family's driver list (default: virtio_blk virtio_scsi virtio_net
      virtio_pci virtio_ring virtio; SUSE families add ata_piix ata_generic first)
    + extra: drivers added to the list (e.g. ``["virtio_console"]``)
    + kernels: ``"all"`` installed kernels, the ``"default"`` boot entry's, or a list of versions
    + remove_blacklists: disable modprobe.d lines that stop a wanted driver (then rebuild every initrd)
    + gather_timeout: seconds the host may take to answer the state gathering
    + change_timeout: seconds each change (a write, one rebuild) may take
    + fix_device_names: rewrite device names that will not exist on KVM (fstab, crypttab, the kernel
      line where it is written) to ``UUID=``, and Xen leftovers in module configuration
    + fix_network: move aside NIC rules bound to the old MAC, drop MAC bindings from interface files
    + fix_efi_fallback: copy the distribution's shim/GRUB to the ESP's removable-media path
    + regenerate_grub: regenerate a grub.cfg (grub-mkconfig) where a value only lives there
    + set_default_kernel: when the default kernel cannot run on KVM, make the best installed one that
      can the default (GRUB legacy's ``default`` line in menu.lst/grub.conf; elsewhere refused)

    A boot-path finding that blocks boot or network and is not fixed (no opt-in, or the fix was
    refused) fails the host at the end, after the driver work, naming it.
    """
    settings = Settings.read(
        drivers, extra, kernels, remove_blacklists=remove_blacklists, gather_timeout=gather_timeout,
        change_timeout=change_timeout, fix_device_names=fix_device_names, fix_network=fix_network,
        fix_efi_fallback=fix_efi_fallback, regenerate_grub=regenerate_grub, set_default_kernel=set_default_kernel,
    )  # fmt: skip
    if settings.errors:  # checked once, before anything is gathered
        ops.fail_host(name="Refuse bad settings", message=f"{'; '.join(settings.errors)} - nothing was changed")
        return
    change_s = math.ceil(settings.change_timeout)  # pyinfra's _timeout takes whole seconds (an int)
    state = gather_state(host, settings.lookup(), _timeout=math.ceil(settings.gather_timeout))
    if state is None:
        return  # the command failed: pyinfra has reported this host as failed
    the_plan = plan(state, settings)
    if the_plan.errors:
        ops.fail_host(
            name="Refuse an unsupported or broken host",
            message=f"{'; '.join(the_plan.errors)} - nothing was changed on this host",
        )
        return
    log_plan(the_plan)
    if the_plan.blacklisted and not settings.remove_blacklists:  # a rebuild would copy them back (rebuild.sh refuses)
        lines = "; ".join(f"{b.file} line {b.line} ({ops.printable(b.text)[:80]})" for b in the_plan.blacklisted)
        ops.fail_host(name="Refuse an unsupported or broken host",
                      message=f"module configuration stops {' '.join(sorted({b.driver for b in the_plan.blacklisted}))}"
                              f" loading: {lines}; set kvm_remove_blacklists to disable those lines - nothing was "
                              "changed on this host")  # fmt: skip
        return
    if the_plan.status == "compliant":
        host.noop("every handled initrd holds the KVM drivers, and they are declared")
        return
    run_id = ops.new_run_id()  # ties the rollback copies (declaration, modprobe.d) to this run's rebuilds
    rebuild = [k for k in the_plan.kernels if k.version in the_plan.to_rebuild]
    done: dict[str, Any] = {}
    fixes = bpo.host_fixes(state.boot_files, the_plan.boot_path, state.disks, settings.regenerate_grub)
    unblacklist = settings.remove_blacklists and the_plan.blacklisted
    if unblacklist or bpo.needs_rebuild(fixes):
        # the initrds carry a copy of modprobe.d (and crypttab, INITRD_MODULES): rebuild every one that
        # holds a wanted module. Decided before the fixes: the last step of the run drops its rollback state.
        rebuild = [k for k in the_plan.kernels if not k.too_old and k.needed]
    queue_fixes(fixes, run_id, last=not rebuild, timeout=change_s)
    if unblacklist:
        done["blacklists"] = ops.disable_modprobe_lines(
            name="Disable modprobe.d lines that stop KVM drivers", drivers=the_plan.wanted, state=state,
            run_id=run_id, _timeout=change_s,
        )  # fmt: skip
    if the_plan.to_declare:
        done["declared"] = ops.declare_drivers(
            name="Declare the KVM drivers", drivers=the_plan.declare, state=state,
            run_id=run_id if rebuild else "", _timeout=change_s,
        )  # fmt: skip
    done["rebuilt"] = []
    for i, k in enumerate(rebuild):
        meta = ops.rebuild_initrd(
            name=f"Rebuild the initrd of kernel {k.version}", kernel=k.version, modules=k.needed, state=state,
            force=not k.missing, last=i == len(rebuild) - 1, run_id=run_id, _timeout=change_s,
        )  # fmt: skip
        done["rebuilt"].append((k.initrd, k.version, meta))
    changed = len(done) > 1 or done["rebuilt"] or fixes.texts or fixes.moves or fixes.copies
    if state.image and state.selinux in ("enforcing", "permissive") and changed:
        ops.request_relabel(name="Have SELinux relabel the image at its first boot (/.autorelabel)")
        done["relabel"] = True
    if len(done) > 1 or done["rebuilt"]:
        python.call(name="Report what was done", function=log_summary, done=done, declared=state.declared.path)
    left = unfixed(the_plan, fixes)
    if left:
        ops.fail_host(name="Report what still stops the host on KVM",
                      message=f"the drivers are done, but {'; '.join(left)}")  # fmt: skip


def queue_fixes(fixes: bpo.FixPlan, run_id: str, last: bool, timeout: int) -> None:
    """The opt-in boot-path fixes, before the drivers' changes: rewrites, moves, grub.cfg regenerations,
    ESP copies, then the proof that each UUID written names the device the old name did (a mismatch
    rolls the run back).
    """
    if fixes.texts:
        bpo.rewrite_files(name="Rewrite device names and MAC bindings (opt-in)", changes=fixes.changes(),
                          run_id=run_id, _timeout=timeout)  # fmt: skip
    if fixes.moves:
        bpo.move_aside(name="Move NIC rules bound to the old MAC aside (opt-in)", paths=fixes.moves,
                       olds=fixes.olds, run_id=run_id, _timeout=timeout)  # fmt: skip
    for path, gone in fixes.regenerate.items():  # after the rewrites: grub-mkconfig reads /etc/default/grub
        bpo.regenerate_grub_cfg(name=f"Regenerate {path} (opt-in)", path=path, old=fixes.olds[path], gone=gone,
                                run_id=run_id, _timeout=timeout)  # fmt: skip
    for esp, copies in fixes.copies.items():
        bpo.copy_efi_fallback(name=f"Copy the UEFI fallback onto {esp} (opt-in)", esp=esp, copies=list(copies),
                              run_id=run_id, _timeout=timeout)  # fmt: skip
    if fixes.verify:
        bpo.verify_uuids(name="Prove each UUID written names the same device", expected=fixes.verify,
                         run_id=run_id, last=last, _timeout=timeout)  # fmt: skip


def unfixed(the_plan: Plan, fixes: bpo.FixPlan) -> list[str]:
    """What still blocks boot or network after this run: findings without an opt-in set, and fixes
    that were refused (each with its reason).
    """
    left = [f"{f['severity']}: {finding_text(f)}" + (f" (set {f['opt_in']})" if f["opt_in"] else " (needs a person)")
            for f in the_plan.boot_path if f["severity"] != ADVICE and not f["fixing"]]  # fmt: skip
    return [ops.printable(x) for x in left + [f"fix refused: {r}" for r in fixes.refused]]


def log_plan(the_plan: Plan) -> None:
    """Log, per host, what needs no work: built-in and absent drivers, warnings."""
    for k in the_plan.kernels:
        if k.builtin:
            logger.info(f"{host.print_prefix}kernel {k.version}: built in: {' '.join(k.builtin)}")
        if k.absent:
            logger.warning(f"{host.print_prefix}kernel {k.version}: not in this kernel at all: {' '.join(k.absent)}")
    for warning in the_plan.warnings:
        logger.warning(f"{host.print_prefix}{ops.printable(warning)}")


def _changed(meta: OperationMeta | None) -> bool:
    try:
        return bool(meta) and meta.did_change()  # type: ignore[union-attr]
    except RuntimeError:  # not executed (a dry run): nothing was done
        return False


def log_summary(done: dict[str, Any], declared: str | None) -> None:
    """After the changes: one line per thing done on this host (runs on the control machine)."""
    lines = []
    if _changed(done.get("blacklists")):
        lines.append("modprobe.d lines that stopped a KVM driver disabled (" +
                     "; ".join(ops.printable(x) for x in done["blacklists"].stdout_lines if x) + ")")  # fmt: skip
    if _changed(done.get("declared")):
        lines.append(f"declaration written: {declared}")
    for initrd, version, meta in done["rebuilt"]:
        if _changed(meta):
            lines.append(f"initrd {initrd} (kernel {version}) rebuilt and verified; "
                         f"the last one not built by kvm-drivers is kept as {initrd}.kvm-drivers.bak")  # fmt: skip
    if done.get("relabel"):
        lines.append("SELinux: /.autorelabel made, the image's first boot relabels its file system")
    for line in lines or ["nothing needed changing (another run got there first)"]:
        logger.info(f"{host.print_prefix}kvm-drivers: {line}")
