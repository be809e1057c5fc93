"""
pyinfra operations: declare drivers, rebuild one initrd, disable modprobe.d lines.

Each takes the wanted state, and the host's state (``facts.state.HostState``) as ``state``: pass
the one the deploy gathered (``facts.kvm_drivers.gather_state``), or leave it out and the
operation gathers it (the ``KvmDrivers`` fact, one remote command). Each yields nothing
(``host.noop``) when the host is already in the wanted state, and raises ``OperationError``
when the state says the host must not be changed. The commands are the scripts in
``hostside/``; each takes the host's kvm-drivers lock and re-checks what it was told.
"""

from __future__ import annotations

import re
import secrets

from pyinfra import host, logger
from pyinfra.api import OperationError, QuoteString, StringCommand, operation
from pyinfra.context import ctx_state
from pyinfra.operations.util.files import generate_color_diff

from kvm_drivers.facts.blacklist import stops
from kvm_drivers.facts.config_files import norm, shell_assignments, shell_statements
from kvm_drivers.facts.kvm_drivers import KvmDrivers
from kvm_drivers.facts.state import HostState, KernelState
from kvm_drivers.facts.wire import DIGITS, MODPROBE_FILE
from kvm_drivers.hostside import LISTER, REBUILD, UNBLACKLIST, WRITE
from kvm_drivers.operations.settings import driver_list_errors

MARKER = "# kvm-drivers: virtio drivers needed to boot on KVM"


def _state(state: HostState | None, drivers: list[str]) -> HostState:
    """The state given, else gathered now; refused if it says the host must not be changed."""
    if state is None:
        state = host.get_fact(KvmDrivers, drivers=drivers)
    if state is None:
        raise OperationError("the state of this host could not be gathered")
    if state.errors:
        raise OperationError(f"not changing this host: {'; '.join(printable(e) for e in state.errors)}")
    return state


def _names(drivers: list[str], what: str = "driver") -> list[str]:
    """Drivers normalised; OperationError for anything that is not a module name (the inventory's check)."""
    if not drivers or driver_list_errors(what, drivers):
        raise OperationError(f"{what}s must be a non-empty list of module names, got {drivers!r:.80}")
    return list(dict.fromkeys(norm(d) for d in drivers))


def render_modules_file(text: str | None, missing: list[str]) -> str:
    """
    /etc/initramfs-tools/modules with the missing drivers appended, one per line.

    Every existing line is kept byte for byte; CRLF files get CRLF lines.
    """
    text = text or ""
    eol = "\r\n" if "\r\n" in text else "\n"
    if text and not text.endswith("\n"):
        text += eol
    if MARKER not in text:
        text += MARKER + eol
    return text + "".join(f"{d}{eol}" for d in missing)


def render_dracut_dropin(drivers: list[str]) -> str:
    """The drop-in kvm-drivers owns in /etc/dracut.conf.d/."""
    header = f"{MARKER}\n# Managed by kvm-drivers; edit the inventory data instead.\n"
    return header + f'add_drivers+=" {" ".join(drivers)} "\n'


def render_sysconfig_kernel(text: str | None, wanted: list[str], missing: list[str]) -> str:
    """
    /etc/sysconfig/kernel with INITRD_MODULES merged: ata_piix ata_generic first (when
    wanted), then the modules already there, then the other missing drivers. Only the
    INITRD_MODULES line changes; comments and every other line are kept.
    """
    text = text or ""
    lines = text.split("\n")
    span = None  # (first, last) line of the assignment; it may continue over several lines
    current: list[str] = []
    for first, last, stmt in shell_statements(text):
        for key, _, value in shell_assignments(stmt):
            if key == "INITRD_MODULES":
                span, current = (first, last), value.split()
    first_mods = [d for d in ("ata_piix", "ata_generic") if d in wanted]
    merged = first_mods + [m for m in current if norm(m) not in first_mods]
    merged += [d for d in missing if d not in {norm(m) for m in merged}]
    new = f'INITRD_MODULES="{" ".join(merged)}"'
    if span is None:
        if text and not text.endswith("\n"):
            text += "\n"
        return text + f"{MARKER}\n{new}\n"
    old = lines[span[0]]
    comment = re.search(r"\s+#.*$", lines[span[1]].split("=", 1)[-1]) if span[0] == span[1] else None
    indent = re.match(r"^\s*(export\s+)?", old).group(0)
    eol = "\r" if lines[span[1]].endswith("\r") else ""
    kept = comment.group(0).rstrip("\r") if comment and '"' not in comment.group(0) else ""
    lines[span[0] : span[1] + 1] = [indent + new + kept + eol]
    return "\n".join(lines)


def declaration(state: HostState, drivers: list[str]) -> tuple[str, str] | None:
    """(path, new content) that declares drivers for the host's generator, None when all are declared."""
    declared = state.declared
    missing = [d for d in drivers if d not in declared.drivers]
    if not missing or not declared.path:
        return None
    if state.generator == "initramfs-tools":
        return declared.path, render_modules_file(declared.current, missing)
    if state.generator == "dracut":
        ours = [d for d in declared.drivers if d not in declared.by_others]
        return declared.path, render_dracut_dropin(ours + [d for d in missing if d not in ours])
    if state.generator == "suse-mkinitrd":
        return declared.path, render_sysconfig_kernel(declared.current, drivers, missing)
    return None


def printable(text: str) -> str:
    """Host data for a terminal: control characters (escape sequences) shown as hex escapes."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def new_run_id() -> str:
    """An id for one run on one host: it ties rollback state on the host to the run that made it."""
    return secrets.token_hex(8)


def _show_diff(path: str, old: str | None, new: str) -> None:
    """With pyinfra's --diff: the change of a file as a unified diff (as files.put shows one)."""
    config = ctx_state.get().config if ctx_state.isset() else None
    if not (config and config.DIFF):
        return
    host.log(f"Will {'modify' if old is not None else 'create'} {printable(path)}", logger.info)

    def lines(text: str) -> list[str]:  # the host's text escaped before the diff adds its own colours
        return [printable(line.rstrip("\n")) + "\n" for line in text.splitlines(keepends=True)]

    for line in generate_color_diff(lines(old or ""), lines(new)):
        logger.info("  %s", line)
    logger.info("")


@operation()
def declare_drivers(drivers: list[str], state: HostState | None = None, run_id: str = ""):
    """
    Declare drivers where the host's initrd generator reads them, so that every later rebuild
    (kernel updates included) keeps them: initramfs-tools' ``modules`` file, a dracut drop-in
    (``/etc/dracut.conf.d/90-kvm-drivers.conf``) or SUSE's ``INITRD_MODULES``. Unrelated lines are
    kept, nothing is written twice, and the file is written only if it still holds what the state
    was read from (an edit made since is kept). With ``--diff``, shows the change as a diff.

    + drivers: module names to declare (give only drivers that are modules: see ``Plan.declare``)
    + state: the host's ``HostState`` (gathered here when not given)
    + run_id: keep a root-only copy of the old file tied to this run, so that a failing
      ``rebuild_initrd`` with the same id puts it back; "" keeps none

    **Example:**

    .. code:: python

        declare_drivers(name="Declare virtio", drivers=["virtio_blk", "virtio_scsi", "virtio_pci"])
    """
    drivers = _names(drivers)
    state = _state(state, drivers)
    change = declaration(state, drivers)
    if change is None:
        if not state.declared.path:
            raise OperationError(f"no initrd generator to declare drivers for ({state.generator})")
        host.noop(f"{state.declared.path} already declares {' '.join(drivers)}")
        return
    path, content = change
    old = state.declared.current
    _show_diff(path, old, content)
    yield StringCommand(
        "sh", "-c", QuoteString(WRITE), "kvm-write", QuoteString(path), QuoteString(content),
        "0" if old is None else "1", QuoteString(old or ""), QuoteString(run_id),
    )  # fmt: skip


def rebuild_command(
    generator: str, kernel: KernelState, modules: list[str], last: bool = True, force: bool = False, run_id: str = "",
    image: bool = False,
) -> StringCommand:
    """The remote command that safely rebuilds and verifies one kernel's initrd (hostside/rebuild.sh);
    image: in a disk image's tree (no host-only build, KVM_IMAGE=1).
    """
    return StringCommand(
        *(["KVM_IMAGE=1"] if image else []), "sh", "-c",
        QuoteString(REBUILD), "kvm-rebuild", QuoteString(LISTER), QuoteString(generator),
        QuoteString(kernel.initrd), QuoteString(kernel.version), QuoteString(run_id), "1" if last else "0",
        "1" if force else "0", *[QuoteString(m) for m in modules],
    )  # fmt: skip


@operation()
def rebuild_initrd(
    kernel: str,
    modules: list[str],
    state: HostState | None = None,
    force: bool = False,
    last: bool = True,
    run_id: str = "",
):
    """
    Rebuild the initrd that the bootloader boots for one kernel, with the host's own generator
    (update-initramfs/mkinitramfs, dracut or mkinitrd), so that it holds modules: built into a
    temporary file beside it, listed, every module checked, flushed, then moved over the old
    one. ``IMAGE.kvm-drivers.bak`` keeps a verified copy of the last image not built by
    kvm-drivers (taken afresh when the image was rebuilt by something else since, or the copy is
    incomplete); without a complete backup the image is not replaced. Fails, naming what is
    missing, if the new image still lacks one; the old image is then untouched. Nothing is done
    when it already holds them.

    + kernel: the kernel version (``uname -r`` style)
    + modules: modules the initrd must hold (a driver and its dependencies: ``KernelPlan.needed``)
    + state: the host's ``HostState`` (gathered here when not given)
    + force: rebuild even if the initrd already holds them (e.g. after a blacklist was removed)
    + last: this is the run's last rebuild: on success it drops the run's rollback copy
    + run_id: as for ``declare_drivers``: a failure puts back what that run's declaration and
      modprobe.d edits replaced (each only while it holds what the run wrote)

    **Example:**

    .. code:: python

        rebuild_initrd(name="virtio in the initrd", kernel="6.1.0-27-amd64",
                       modules=["virtio_blk", "virtio_pci", "virtio_ring", "virtio"])
    """
    modules = _names(modules, "module")
    state = _state(state, modules)
    k = next((k for k in state.kernels if k.version == kernel), None)
    if k is None:
        have = ", ".join(k.version for k in state.kernels) or "none"
        raise OperationError(f"kernel {kernel!r:.80} is not installed (installed: {have})")
    if k.initrd_refused:
        raise OperationError(f"kernel {kernel}: {printable(k.initrd_refused)}")
    if not state.generator:
        raise OperationError("no initrd generator on this host")
    readable = not k.initrd_error and not k.no_initrd
    missing = [m for m in modules if not readable or m not in k.in_initrd]
    if not missing and not force:
        host.noop(f"{k.initrd} already holds {' '.join(modules)}")
        return
    yield rebuild_command(state.generator, k, modules, last=last, force=force, run_id=run_id, image=state.image)


@operation()
def disable_modprobe_lines(drivers: list[str], state: HostState | None = None, run_id: str = ""):
    """
    Disable the module configuration lines that stop one of drivers loading (``blacklist X``, an
    ``install X`` command that does not load X, ``alias X off``: ``facts.blacklist.stops`` judges),
    by commenting them out (every physical line of a line continued with backslashes); every other
    line is kept. A file in /etc (modprobe.d, /etc/modprobe.conf, /etc/modprobe.conf.local) is
    edited (through a link, to its target); a vendor file (/usr/lib, /lib, /run) is overridden by a
    copy in /etc/modprobe.d. One command per file, each line re-checked on the host. The initrds
    carry a copy of modprobe.d: rebuild them afterwards (``rebuild_initrd`` with ``force=True``,
    which proves the new image stops none of them).

    + drivers: the drivers that must not be stopped
    + state: the host's ``HostState`` (gathered here when not given)
    + run_id: as for ``declare_drivers``: a failing ``rebuild_initrd`` with the same id puts each
      file back (and removes an override it created), while it holds what this run wrote

    **Example:**

    .. code:: python

        disable_modprobe_lines(name="Unblock virtio", drivers=["virtio_blk", "virtio_net"])
    """
    drivers = _names(drivers)
    state = _state(state, drivers)
    lines = [b for b in state.blacklists if b.driver in drivers and stops([b.text], [b.driver])]
    if not lines:
        host.noop(f"no modprobe.d line stops {' '.join(drivers)}")
        return
    by_file: dict[str, list] = {}
    for b in lines:
        if not (MODPROBE_FILE.match(b.file) and DIGITS.match(b.line)):
            raise OperationError(f"refusing odd modprobe.d reference {b.file!r} line {b.line!r}")
        by_file.setdefault(b.file, []).append(b)
    for path, found in by_file.items():
        args = [QuoteString(x) for b in found for x in (b.line, b.text)]
        yield StringCommand("sh", "-c", QuoteString(UNBLACKLIST), "kvm-unblacklist", QuoteString(path),
                            QuoteString(run_id), *args)  # fmt: skip


@operation()
def request_relabel():
    """
    Have SELinux relabel the file system at the next boot (``/.autorelabel``), as virt-v2v does for a
    converted guest: what the deploy wrote inside a disk image carries no SELinux label. For images
    only (its commands run with the image as ``/``); a link there is replaced, not followed.
    """
    yield StringCommand("sh", "-c", QuoteString(
        "[ -f /.autorelabel ] && [ ! -L /.autorelabel ] || { rm -f /.autorelabel && : > /.autorelabel; }"))


@operation(is_idempotent=False)
def fail_host(message: str):
    """
    Fail this host with a message (and change nothing on it); other hosts go on.

    + message: why (shown as the host's error)
    """
    yield StringCommand("echo", QuoteString(f"kvm-drivers: {printable(message)}"), ">&2;", "exit", "1")
