"""
pyinfra operations: declare the wanted drivers, rebuild the initrds that lack them.

Each operation takes the ``info`` dict of the ``KvmDrivers`` fact (gathered once by the
deploy) or gathers it itself; it yields nothing (``host.noop``) when the host is already
in the wanted state.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pyinfra import host, logger
from pyinfra.api import QuoteString, StringCommand, operation

from facts.kvm_drivers import LISTER, KvmDrivers
from facts.parsers import norm, shell_assignments

HERE = Path(__file__).parent
LIB = (HERE.parent / "facts" / "lib.sh").read_text()
REBUILD_SCRIPT = LIB + (HERE / "rebuild.sh").read_text()
MARKER = "# kvm-drivers: virtio drivers needed to boot on KVM"

# Write a file atomically: temp file beside it, owner/mode/SELinux label of the old one, rename.
# KEEP=1: keep what was there (CONFIG.kvm-drivers.prev, or an .absent marker) so that a failed
# rebuild later in the run can roll the change back (see rebuild.sh). Holds the host's
# kvm-drivers lock (lib.sh kvm_lock, as rebuild.sh does); a file that already has the content is left alone
# (another run got there first), so concurrent runs never clobber each other's rollback copy.
WRITE_SCRIPT = LIB + """set -e
f=$1; keep=$3
kvm_lock || { echo "kvm-drivers: $KVM_LOCK_ERR" >&2; exit 1; }
if [ -f "$f" ] && [ "$(cat "$f"; echo x)" = "$(printf '%sx' "$2")" ]; then
    echo "kvm-drivers: $f already has the wanted content (another run wrote it)"
    exit 0
fi
mkdir -p "$(dirname "$f")"
tmp=$(mktemp "$f.kvm-drivers.XXXXXX")
trap 'rm -f "$tmp"' EXIT
printf '%s' "$2" > "$tmp"
if [ -e "$f" ]; then
    chown --reference="$f" "$tmp"; chmod --reference="$f" "$tmp"
    if command -v chcon >/dev/null 2>&1; then chcon --reference="$f" "$tmp" 2>/dev/null || true; fi
    [ "$keep" = 1 ] && cp -p "$f" "$f.kvm-drivers.prev"
else
    chmod 644 "$tmp"
    [ "$keep" = 1 ] && : > "$f.kvm-drivers.absent"
fi
mv -f "$tmp" "$f"
trap - EXIT
"""

def _info(info: dict | None, drivers: list[str] | None, extra: list[str] | None, kernels: Any) -> dict:
    return info if info is not None else host.get_fact(KvmDrivers, drivers=drivers, extra=extra, kernels=kernels)


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
    index = None
    current: list[str] = []
    for i, line in enumerate(lines):
        for key, _, value in shell_assignments(line):
            if key == "INITRD_MODULES":
                index, current = i, value.split()
    first = [d for d in ("ata_piix", "ata_generic") if d in wanted]
    merged = first + [m for m in current if norm(m) not in first]
    merged += [d for d in missing if d not in {norm(m) for m in merged}]
    new = f'INITRD_MODULES="{" ".join(merged)}"'
    if index is None:
        if text and not text.endswith("\n"):
            text += "\n"
        return text + f"{MARKER}\n{new}\n"
    old = lines[index]
    comment = re.search(r"\s#.*$", old.split("=", 1)[1])
    indent = re.match(r"^\s*(export\s+)?", old).group(0)
    lines[index] = indent + new + (comment.group(0) if comment and '"' not in comment.group(0) else "")
    return "\n".join(lines)


def new_declaration(info: dict) -> tuple[str, str] | None:
    """(path, new content) of the declaration to write, or None when nothing is missing."""
    missing = info["to_declare"]
    declared = info["declared"]
    if not missing:
        return None
    if info["generator"] == "initramfs-tools":
        return declared["path"], render_modules_file(declared.get("current"), missing)
    if info["generator"] == "dracut":
        ours = [d for d in declared["drivers"] if d not in declared["by_others"]]
        return declared["path"], render_dracut_dropin(ours + [d for d in missing if d not in ours])
    if info["generator"] == "suse-mkinitrd":
        return declared["path"], render_sysconfig_kernel(declared.get("current"), info["wanted"], missing)
    return None


@operation()
def declare_drivers(
    info: dict | None = None, drivers: list[str] | None = None, extra: list[str] | None = None, kernels: Any = "all"
):
    """
    Declare the wanted drivers where the host's initrd generator reads them, so that every
    later rebuild (kernel updates included) keeps them: initramfs-tools ``modules`` file,
    a dracut drop-in, or SUSE's ``INITRD_MODULES``. Unrelated lines are kept; no entry is
    written twice; built-in and absent drivers are not declared.

    + info: the ``KvmDrivers`` fact (gathered here when not given)
    + drivers / extra / kernels: as for ``KvmDrivers``
    """
    info = _info(info, drivers, extra, kernels)
    if info["errors"]:
        host.noop(f"not declaring drivers: {'; '.join(info['errors'])}")
        return
    change = new_declaration(info)
    if change is None:
        host.noop(f"{info['declared']['path']} already declares {' '.join(info['wanted'])}")
        return
    path, content = change
    keep = "1" if info["to_rebuild"] else "0"  # a rebuild follows: keep a copy to roll back to
    yield StringCommand(
        "sh", "-c", QuoteString(WRITE_SCRIPT), "kvm-write", QuoteString(path), QuoteString(content), keep
    )


def rebuild_command(info: dict, kernel: dict, last: bool = True, force: bool = False) -> StringCommand:
    """The remote command that safely rebuilds and verifies one kernel's initrd.

    last: this is the run's last rebuild (on success it drops the declaration's rollback copy);
    force: rebuild even if the image already holds every module.
    """
    return StringCommand(
        "sh",
        "-c",
        QuoteString(REBUILD_SCRIPT),
        "kvm-rebuild",
        QuoteString(LISTER),
        QuoteString(info["generator"]),
        QuoteString(kernel["initrd"]),
        QuoteString(kernel["version"]),
        QuoteString(info["declared"]["path"] or ""),
        "1" if last else "0",
        "1" if force else "0",
        *[QuoteString(m) for m in kernel["needed"]],
    )


@operation()
def rebuild_initrds(
    info: dict | None = None, drivers: list[str] | None = None, extra: list[str] | None = None, kernels: Any = "all"
):
    """
    Rebuild the initrd of exactly the kernels whose initrd lacks a wanted driver (or one of
    its dependencies) that exists as a module for that kernel, with the family's own tool,
    into a temporary file; list it, verify every module, then move it over the old one.
    Fails the host, naming the missing drivers, if the new image still lacks one.

    + info: the ``KvmDrivers`` fact (gathered here when not given)
    + drivers / extra / kernels: as for ``KvmDrivers``
    """
    info = _info(info, drivers, extra, kernels)
    if info["errors"]:
        host.noop(f"not rebuilding: {'; '.join(info['errors'])}")
        return
    todo = [k for k in info["kernels"] if k["version"] in info["to_rebuild"]]
    for i, kernel in enumerate(todo):
        yield rebuild_command(info, kernel, last=i == len(todo) - 1, force=not kernel["missing"])
    if not info["to_rebuild"]:
        host.noop("every handled initrd holds the wanted drivers")


# Disable one modprobe.d line: in /etc, commented out in place (GNU sed -i keeps owner and
# mode); a vendor file (/usr/lib, /lib, /run) is overridden by a same-named copy in /etc.
UNBLACKLIST_SCRIPT = r"""set -e
f=$1; n=$2
expr='/^[[:space:]]*\(blacklist\|install\)[[:space:]]/s/^/# disabled by kvm-drivers (needed to boot on KVM): /'
case "$f" in
    /etc/*) sed -i -e "${n}{$expr}" "$f" ;;
    *) t="/etc/modprobe.d/${f##*/}"
       sed -e "${n}{$expr}" "$f" > "$t.kvm-drivers.tmp"
       chmod 644 "$t.kvm-drivers.tmp" && mv -f "$t.kvm-drivers.tmp" "$t" ;;
esac
"""


@operation()
def remove_blacklists(info: dict | None = None, drivers: list[str] | None = None,
                      extra: list[str] | None = None, kernels: Any = "all"):
    """
    Disable the modprobe.d lines (``blacklist X``, ``install X /bin/false``) that stop a wanted
    driver loading; every other line is kept. Off by default in the deploy
    (``kvm_remove_blacklists``): the initrds are then rebuilt so they no longer carry them.

    + info / drivers / extra / kernels: as for ``declare_drivers``
    """
    info = _info(info, drivers, extra, kernels)
    if not info["blacklisted"]:
        host.noop("no modprobe.d line stops a wanted driver")
        return
    for b in info["blacklisted"]:
        yield StringCommand("sh", "-c", QuoteString(UNBLACKLIST_SCRIPT), "kvm-unblacklist",
                            QuoteString(b["file"]), QuoteString(b["line"]))  # fmt: skip


@operation(is_idempotent=False)
def fail_host(message: str):
    """Fail this host with a message (and change nothing on it); other hosts go on."""
    yield StringCommand("echo", QuoteString(f"kvm-drivers: {message}"), ">&2;", "exit", "1")


def report(info: dict) -> None:
    """Log, per host, what needs no work: built-in and absent drivers, warnings."""
    for kernel in info["kernels"]:
        if kernel["builtin"]:
            logger.info(f"{host.print_prefix}kernel {kernel['version']}: built in: {' '.join(kernel['builtin'])}")
        if kernel["absent"]:
            logger.warning(
                f"{host.print_prefix}kernel {kernel['version']}: not in this kernel at all: "
                f"{' '.join(kernel['absent'])}"
            )
    for warning in info["warnings"]:
        logger.warning(f"{host.print_prefix}{warning}")
