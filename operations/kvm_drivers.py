"""
pyinfra operations: declare the wanted drivers, rebuild the initrds that lack them.

Each operation takes the ``info`` dict of the ``KvmDrivers`` fact (gathered once by the
deploy) or gathers it itself; it yields nothing (``host.noop``) when the host is already
in the wanted state.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

from pyinfra import host, logger
from pyinfra.api import OperationError, QuoteString, StringCommand, operation

from facts.kvm_drivers import LISTER, KvmDrivers
from facts.parsers import DIGITS, MODPROBE_FILE, norm, shell_assignments, shell_statements

HERE = Path(__file__).parent
LIB = (HERE.parent / "facts" / "lib.sh").read_text()
REBUILD_SCRIPT = LIB + (HERE / "rebuild.sh").read_text()
MARKER = "# kvm-drivers: virtio drivers needed to boot on KVM"

# Write a declaration file: compare, then swap, under the host's kvm-drivers lock (lib.sh).
# Arguments: PATH CONTENT HAD OLD RUN. The file must still hold what the declaration was
# computed from (HAD=1: the text OLD; HAD=0: no file), else nothing is written: an edit made
# since the state was gathered is never overwritten. A symbolic link is written through to
# its target. The new text goes to a temporary file beside it (owner, mode and SELinux label
# of the old one), is flushed, then renamed over it. RUN (a run id, or ""): what was there is
# kept in the root-only $KVM_STATE/rollback.RUN, so that a failed rebuild of the same run can
# undo the change (lib.sh kvm_rollback). A file that already has the content is left alone.
WRITE_SCRIPT = LIB + """trap '' PIPE
f=$1; new=$2; had=$3; old=$4; run=$5
case "$run" in *[!a-z0-9]*) echo "kvm-drivers: bad run id" >&2; exit 1 ;; esac
kvm_lock || { echo "kvm-drivers: $KVM_LOCK_ERR" >&2; exit 1; }
kvm_stale "$run"
if [ -L "$f" ]; then
    t=$(readlink -f "$f") || { echo "kvm-drivers: cannot resolve the link $f" >&2; exit 1; }
    f=$t
fi
if [ -e "$f" ] && [ ! -f "$f" ]; then
    echo "kvm-drivers: $f is not a regular file: refusing to write it" >&2; exit 1
fi
if [ -f "$f" ] && [ "$(cat "$f"; echo x)" = "$(printf '%sx' "$new")" ]; then
    echo "kvm-drivers: $f already has the wanted content (another run wrote it)"
    exit 0
fi
if [ "$had" = 1 ]; then
    if [ ! -f "$f" ] || [ "$(cat "$f"; echo x)" != "$(printf '%sx' "$old")" ]; then
        echo "kvm-drivers: $f changed since its state was gathered: nothing written, run again" >&2; exit 1
    fi
elif [ -e "$f" ]; then
    echo "kvm-drivers: $f was created since the state was gathered: nothing written, run again" >&2; exit 1
fi
d=$(dirname "$f")
mkdir -p "$d" || exit 1
tmp=$(mktemp "$f.kvm-drivers.XXXXXX") || exit 1
trap 'rm -f "$tmp"' EXIT
trap 'rm -f "$tmp"; exit 1' HUP INT TERM
printf '%s' "$new" > "$tmp" || exit 1
kvm_attrs "$tmp" "$f" || exit 1
if [ -n "$run" ]; then
    r="$KVM_STATE/rollback.$run"
    rm -rf "$r" && mkdir -m 700 "$r" || exit 1
    printf '%s\\n' "$f" > "$r/path" || exit 1
    if [ -f "$f" ]; then cp -p "$f" "$r/prev" || exit 1; fi
    printf '%s' "$new" | cksum > "$r/written" || exit 1
fi
mv -f "$tmp" "$f" || exit 1
trap - EXIT HUP INT TERM
"""

# Disable modprobe.d lines of ONE file, all in one go (PATH RUN LINE TEXT [LINE TEXT]...): each
# line must still read TEXT (else nothing is changed). In /etc the file (or a link's target) is
# rewritten with those lines commented out; a vendor file (/usr/lib, /lib, /run) is overridden
# by a same-named copy in /etc/modprobe.d with them commented out. Under the host lock.
UNBLACKLIST_SCRIPT = LIB + r"""trap '' PIPE
f=$1; run=$2; shift 2
case "$f" in
    */../*|*/./*) echo "kvm-drivers: refusing $f" >&2; exit 1 ;;
    /etc/modprobe.d/*.conf|/run/modprobe.d/*.conf|/usr/local/lib/modprobe.d/*.conf|/usr/lib/modprobe.d/*.conf) ;;
    /lib/modprobe.d/*.conf) ;;
    *) echo "kvm-drivers: refusing $f: not a modprobe.d file" >&2; exit 1 ;;
esac
kvm_lock || { echo "kvm-drivers: $KVM_LOCK_ERR" >&2; exit 1; }
kvm_stale "$run"
[ -f "$f" ] || { echo "kvm-drivers: $f is gone: run again" >&2; exit 1; }
script=$(mktemp "$KVM_STATE/sed.XXXXXX") || exit 1
trap 'rm -f "$script"' EXIT
trap 'rm -f "$script"; exit 1' HUP INT TERM
lines=""
while [ $# -ge 2 ]; do
    case "$1" in ''|*[!0-9]*) echo "kvm-drivers: bad line number '$1'" >&2; exit 1 ;; esac
    # compared as gather.sh sent it (printable ASCII, anything else as '?')
    if [ "$(sed -n "$1p" "$f" | tr -c '\t\n -~' '?')" != "$2" ]; then
        echo "kvm-drivers: $f line $1 changed since it was read: nothing changed, run again" >&2; exit 1
    fi
    printf '%ss/^/# disabled by kvm-drivers (needed to boot on KVM): /\n' "$1" >> "$script"
    lines="$lines $1"
    shift 2
done
case "$f" in
    /etc/*) t=$(readlink -f "$f") || exit 1 ;;
    *) t="/etc/modprobe.d/${f##*/}"
       [ -e "$t" ] && { echo "kvm-drivers: $t appeared since the state was gathered: run again" >&2; exit 1; } ;;
esac
tmp=$(mktemp "$t.kvm-drivers.XXXXXX") || exit 1
trap 'rm -f "$tmp" "$script"' EXIT
trap 'rm -f "$tmp" "$script"; exit 1' HUP INT TERM
sed -f "$script" "$f" > "$tmp" || exit 1
kvm_swap "$tmp" "$t" || exit 1
echo "kvm-drivers: disabled in $t: line(s)$lines of $f"
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
    comment = re.search(r"\s#.*$", lines[span[1]].split("=", 1)[-1]) if span[0] == span[1] else None
    indent = re.match(r"^\s*(export\s+)?", old).group(0)
    eol = "\r" if lines[span[1]].endswith("\r") else ""
    kept = comment.group(0).rstrip("\r") if comment and '"' not in comment.group(0) else ""
    lines[span[0] : span[1] + 1] = [indent + new + kept + eol]
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


def printable(text: str) -> str:
    """Host data for a terminal: control characters (escape sequences) shown as hex escapes."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def new_run_id() -> str:
    """An id for one run on one host: it ties rollback state on the host to the run that made it."""
    return secrets.token_hex(8)


@operation()
def declare_drivers(
    info: dict | None = None,
    drivers: list[str] | None = None,
    extra: list[str] | None = None,
    kernels: Any = "all",
    run_id: str = "",
):
    """
    Declare the wanted drivers where the host's initrd generator reads them, so that every
    later rebuild (kernel updates included) keeps them: initramfs-tools ``modules`` file,
    a dracut drop-in, or SUSE's ``INITRD_MODULES``. Unrelated lines are kept; no entry is
    written twice; built-in and absent drivers are not declared. The file is written only if
    it still holds what the state was computed from (an edit made meanwhile is kept).

    + info: the ``KvmDrivers`` fact (gathered here when not given)
    + drivers / extra / kernels: as for ``KvmDrivers``
    + run_id: ties the rollback copy to this run (``rebuild_initrds`` with the same id undoes
      the declaration if a rebuild fails); "" keeps no rollback copy
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
    old = info["declared"].get("current")
    keep = run_id if info["to_rebuild"] else ""  # a rebuild follows: keep a copy to roll back to
    yield StringCommand(
        "sh", "-c", QuoteString(WRITE_SCRIPT), "kvm-write", QuoteString(path), QuoteString(content),
        "0" if old is None else "1", QuoteString(old or ""), QuoteString(keep),
    )  # fmt: skip


def rebuild_command(
    info: dict, kernel: dict, last: bool = True, force: bool = False, run_id: str = ""
) -> StringCommand:
    """The remote command that safely rebuilds and verifies one kernel's initrd.

    last: this is the run's last rebuild (on success it drops the run's rollback state);
    force: rebuild even if the image already holds every module; run_id: as for declare_drivers.
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
        QuoteString(run_id),
        "1" if last else "0",
        "1" if force else "0",
        *[QuoteString(m) for m in kernel["needed"]],
    )


@operation()
def rebuild_initrds(
    info: dict | None = None,
    drivers: list[str] | None = None,
    extra: list[str] | None = None,
    kernels: Any = "all",
    run_id: str = "",
):
    """
    Rebuild the initrd of exactly the kernels whose initrd lacks a wanted driver (or one of
    its dependencies) that exists as a module for that kernel, with the family's own tool,
    into a temporary file; list it, verify every module, then move it over the old one.
    Fails the host, naming the missing drivers, if the new image still lacks one.

    + info: the ``KvmDrivers`` fact (gathered here when not given)
    + drivers / extra / kernels: as for ``KvmDrivers``
    + run_id: as for ``declare_drivers``: a failure undoes that run's declaration
    """
    info = _info(info, drivers, extra, kernels)
    if info["errors"]:
        host.noop(f"not rebuilding: {'; '.join(info['errors'])}")
        return
    todo = [k for k in info["kernels"] if k["version"] in info["to_rebuild"]]
    for i, kernel in enumerate(todo):
        yield rebuild_command(info, kernel, last=i == len(todo) - 1, force=not kernel["missing"], run_id=run_id)
    if not info["to_rebuild"]:
        host.noop("every handled initrd holds the wanted drivers")


@operation()
def remove_blacklists(
    info: dict | None = None,
    drivers: list[str] | None = None,
    extra: list[str] | None = None,
    kernels: Any = "all",
    run_id: str = "",
):
    """
    Disable the modprobe.d lines (``blacklist X``, ``install X /bin/false``) that stop a wanted
    driver loading; every other line is kept. One command per file, all its lines at once.
    Off by default in the deploy (``kvm_remove_blacklists``): the initrds are then rebuilt so
    they no longer carry them.

    + info / drivers / extra / kernels / run_id: as for ``declare_drivers``
    """
    info = _info(info, drivers, extra, kernels)
    if not info["blacklisted"]:
        host.noop("no modprobe.d line stops a wanted driver")
        return
    by_file: dict[str, list[dict]] = {}
    for b in info["blacklisted"]:
        if not (MODPROBE_FILE.match(b["file"]) and DIGITS.match(b["line"])):
            raise OperationError(f"refusing odd modprobe.d reference {b['file']!r} line {b['line']!r}")
        by_file.setdefault(b["file"], []).append(b)
    for path, lines in by_file.items():
        args = [QuoteString(x) for b in lines for x in (b["line"], b["text"])]
        yield StringCommand("sh", "-c", QuoteString(UNBLACKLIST_SCRIPT), "kvm-unblacklist", QuoteString(path),
                            QuoteString(run_id), *args)  # fmt: skip


@operation(is_idempotent=False)
def fail_host(message: str):
    """Fail this host with a message (and change nothing on it); other hosts go on."""
    yield StringCommand("echo", QuoteString(f"kvm-drivers: {printable(message)}"), ">&2;", "exit", "1")


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
        logger.warning(f"{host.print_prefix}{printable(warning)}")
