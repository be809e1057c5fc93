"""The report's rows: one per host from its plan (operations/plan.py), the check's exit code, what
changed since a previous report, and the text table.

Row keys (stable, one object per host): host, status, distro, family, version, generator,
default_kernel, initrd, kernels [{version, default, initrd, missing, builtin, absent, error}],
default_missing, fallback_missing {kernel: [drivers]}, blacklisted, declared, not_declared, setting,
errors, warnings, boot_path [{kind, severity, where, line, text, message, opt_in, fixing}] (what else
stops the server booting or being reached on KVM: facts/boot_path.py). Host data is untrusted:
printable() escapes it (control characters included).
"""

from __future__ import annotations

import json
import os
import stat
import textwrap
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvm_drivers.facts.boot_path import ADVICE, SEVERITIES
from kvm_drivers.operations.plan import STATUSES, finding_text

if TYPE_CHECKING:
    from kvm_drivers.operations.plan import Plan

SCHEMA_VERSION = 1  # of the JSON document (formats.document); read_previous reads only this one

# Exit codes of the drift check: the worst status found decides.
EXIT_CODES = {"compliant": 0, "drifted": 2, "unsupported": 3, "error": 4}
EXIT_USAGE = 1  # bad arguments, an inventory that cannot be loaded, or an internal failure
EXIT_REPORT_FAILED = 5  # the check ran, but a report could not be written
EXIT_NO_HOSTS = 6  # no host in scope: an empty inventory, or --limit matched nothing


def host_row(name: str, plan: Plan | None, error: str = "") -> dict[str, Any]:
    """One host's report object from its plan (None: the host could not be read; error says why)."""
    if plan is None:
        return {
            "host": name, "status": "error", "distro": None, "family": None, "version": None,
            "generator": None, "default_kernel": None, "initrd": None, "kernels": [], "default_missing": [],
            "fallback_missing": {}, "blacklisted": [], "declared": None,
            "not_declared": [], "setting": None, "running_kernel": None,
            "errors": [error or "state could not be gathered"],
            "warnings": [], "boot_path": [],
        }  # fmt: skip
    kernels = plan.kernels
    default = next((k for k in kernels if k.default), kernels[0] if kernels else None)
    distro = plan.state.distro
    return {
        "host": name,
        "status": plan.status,
        "distro": distro.name,
        "family": distro.family,
        "version": distro.version,
        "generator": plan.generator,
        "default_kernel": default.version if default else None,
        "initrd": default.initrd if default else None,
        "kernels": [
            {
                "version": k.version,
                "default": k.default,
                "initrd": k.initrd,
                "missing": k.missing,
                "builtin": k.builtin,
                "absent": k.absent,
                "error": k.initrd_error or None,
            }
            for k in kernels
        ],
        "default_missing": default.missing if default else [],
        "fallback_missing": {k.version: k.missing for k in kernels if k is not default and k.missing},
        "blacklisted": [f"{b.file}:{b.line}: {b.text.strip()}" for b in plan.blacklisted],
        "declared": not plan.to_declare,
        "not_declared": plan.to_declare,
        "setting": plan.declared.setting or None,
        "running_kernel": _running(plan.state),
        "errors": plan.errors,
        "warnings": plan.warnings,
        "boot_path": [finding_row(f) for f in plan.boot_path],
    }


def finding_row(f: dict[str, Any]) -> dict[str, Any]:
    """A boot-path finding of the plan as the report carries it (no fix details; the line as written
    only escaped by printable(): it is the one field a report never needs raw).
    """
    return {
        "kind": f["kind"],
        "severity": f["severity"],
        "where": str(f.get("where") or ""),
        "line": int(f.get("line") or 0),
        "text": printable(f.get("text") or ""),
        "message": str(f.get("message") or ""),
        "opt_in": f.get("opt_in") or "",
        "fixing": bool(f.get("fixing")),
    }


def remedy_text(f: dict[str, Any]) -> str:
    """Who fixes a finding: the setting to set, the set one that fixes it, or a person."""
    if not f["opt_in"]:
        return "needs a person"
    return f"{f['opt_in']} is set: the deploy fixes it" if f["fixing"] else f"fix: set {f['opt_in']}"


def finding_line(f: dict[str, Any]) -> str:
    """A finding in one line: 'blocks boot: /etc/fstab line 3: MESSAGE (fix: set kvm_fix_device_names)'."""
    return f"{f['severity']}: {finding_text(f)} ({remedy_text(f)})"


def findings(row: dict, blocking: bool | None = None) -> list[dict[str, Any]]:
    """A row's boot-path findings, those that block boot first (blocking: only those that block, or
    only advice; None: all).
    """
    found = [f for f in row["boot_path"] if blocking is None or (f["severity"] != ADVICE) == blocking]
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(found, key=lambda f: rank.get(f["severity"], len(rank)))


def plain_warnings(row: dict) -> list[str]:
    """The row's warnings without those that only repeat an advice finding (plan.py copies them there)."""
    advice = {finding_text(f) for f in row["boot_path"] if f["severity"] == ADVICE}
    return [w for w in row["warnings"] if w not in advice]


def _running(state: Any) -> str | None:
    """The running kernel, and whether it is installed (it need not be: what boots next is checked).
    A disk image has none: the row says it is an image.
    """
    if getattr(state, "image", False):
        return "none: a disk image"
    if not state.running_kernel:
        return None
    return state.running_kernel + ("" if state.running_kernel in state.module_dirs else " (not installed)")


def exit_code(rows: list[dict]) -> int:
    """0 when every host is compliant, else the code of the worst status."""
    return max([EXIT_CODES[r["status"]] for r in rows] or [0])


def counts(rows: list[dict]) -> dict[str, int]:
    """Number of hosts per status."""
    return {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES}


def ordered(rows: list[dict]) -> list[dict]:
    """Rows grouped by status, the worst first (error, unsupported, drifted, compliant), then by host name."""
    return sorted(rows, key=lambda r: (-EXIT_CODES[r["status"]], r["host"]))


PREVIOUS_MAX_BYTES = 64 * 1024 * 1024  # a previous report larger than this is refused (30,000 hosts fit)


def read_previous(path: str | Path) -> dict[str, Any]:
    """The statuses of an earlier JSON report, to compare with: {"generated_at", "statuses": {host: status}}.

    ValueError (with the cause) for a file that is not such a report; OSError when it cannot be read
    (FileNotFoundError: there is none).
    """
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the nightly run
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"{path}: not a regular file")
        data = f.read(PREVIOUS_MAX_BYTES + 1)
    if len(data) > PREVIOUS_MAX_BYTES:
        raise ValueError(f"{path}: larger than {PREVIOUS_MAX_BYTES // 2**20} MiB: not a report of this tool")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: not JSON ({type(exc).__name__}: {str(exc)[:100]})") from None
    hosts = doc.get("hosts") if isinstance(doc, dict) else None
    if not isinstance(hosts, list) or doc.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: not a kvm-drivers JSON report (schema_version {SCHEMA_VERSION}, hosts)")
    statuses: dict[str, str] = {}
    for i, row in enumerate(hosts):
        if not (isinstance(row, dict) and isinstance(row.get("host"), str) and row.get("status") in STATUSES):
            raise ValueError(f"{path}: host entry {i} has no host name or no known status")
        statuses[row["host"]] = row["status"]
    when = doc.get("generated_at")
    return {"generated_at": when if isinstance(when, str) else None, "statuses": statuses}


CHANGES = ("worse", "better", "new", "gone")  # kinds of change since the previous report


def changes(rows: list[dict], previous: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Hosts whose status differs from the previous report's: {host, before, after, change}, worse first.

    change: "worse" (a worse status: e.g. compliant -> drifted), "better", "new" (not in the previous
    report), "gone" (in the previous report, not in this check: removed, or outside --limit).
    """
    if previous is None:
        return []
    before = previous["statuses"]
    out = []
    for r in rows:
        was = before.get(r["host"])
        if was is None:
            out.append({"host": r["host"], "before": None, "after": r["status"], "change": "new"})
        elif was != r["status"]:
            # ranked as the exit code ranks them: error > unsupported > drifted > compliant
            kind = "worse" if EXIT_CODES[r["status"]] > EXIT_CODES[was] else "better"
            out.append({"host": r["host"], "before": was, "after": r["status"], "change": kind})
    now = {r["host"] for r in rows}
    out += [{"host": h, "before": s, "after": None, "change": "gone"} for h, s in before.items() if h not in now]
    return sorted(out, key=lambda c: (CHANGES.index(c["change"]), c["host"]))


def changes_text(rows: list[dict], previous: dict[str, Any] | None, quiet: bool = False) -> str:
    """What changed since the previous report, a line per kind (quiet: only hosts that got worse)."""
    if previous is None:
        return ""
    found = changes(rows, previous)
    since = f"since the previous report ({printable(previous['generated_at'] or 'time unknown')})"
    if not found:
        return "" if quiet else f"No status changed {since}."
    out = [f"Changed {since}:"]
    names = {"worse": "worse", "better": "better", "new": "new hosts", "gone": "not in this check"}
    for kind in CHANGES:
        if quiet and kind != "worse":
            continue
        items = [c for c in found if c["change"] == kind]
        if not items:
            continue
        what = [f"{printable(c['host'])} ({c['before']} -> {c['after']})" if c["before"] and c["after"]
                else f"{printable(c['host'])} ({c['after'] or c['before']})" for c in items]  # fmt: skip
        out.append(f"  {names[kind]}: {len(items)}: " + ", ".join(what))
    return "\n".join(out) if len(out) > 1 else ""


def printable(value: object) -> str:
    r"""str(value) with control and format characters (escape sequences, newlines, bidi overrides) shown as \xNN."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(
        c if c == " " or unicodedata.category(c)[0] not in "CZ" else f"\\x{ord(c):02x}" if ord(c) < 256
        else f"\\u{ord(c):04x}"
        for c in text
    )  # fmt: skip


def missing_text(row: dict) -> str:
    """Missing drivers, per kernel when several are installed ('-' when none)."""
    parts = []
    for k in row["kernels"]:
        if k["missing"] or k["error"]:
            what = " ".join(k["missing"]) + (f" ({k['error']})" if k["error"] else "")
            mark = "*" if k["default"] else ""
            parts.append(f"{k['version']}{mark}: {what}" if len(row["kernels"]) > 1 else what)
    return "; ".join(parts) or "-"


def declared_text(row: dict) -> str:
    """'yes', 'no: DRIVERS' or '-' (not known)."""
    if row["declared"] is None:
        return "-"
    return "yes" if row["declared"] else "no: " + " ".join(row["not_declared"])


def os_text(row: dict) -> str:
    """'family distro version' ('?' for an unknown family)."""
    return f"{row['family'] or '?'} {row['distro'] or ''} {row['version'] or ''}".strip()


def problems(row: dict) -> list[str]:
    """One line per problem of a host: missing drivers per kernel, undeclared drivers, blacklists, errors,
    then what else blocks its boot or network on KVM (advice is not a problem: see findings()).
    """
    out = []
    for k in row["kernels"]:
        if k["missing"]:
            mark = " (default)" if k["default"] and len(row["kernels"]) > 1 else ""
            out.append(f"missing from {k['initrd']} (kernel {k['version']}{mark}): {' '.join(k['missing'])}")
    if row["not_declared"]:
        out.append(f"not declared: {' '.join(row['not_declared'])}")
    out += [f"blacklisted: {b}" for b in row["blacklisted"]]
    out += [f"error: {e}" for e in row["errors"]]
    out += [finding_line(f) for f in findings(row, blocking=True)]
    return out


def text_table(rows: list[dict], width: int | None = None, quiet: bool = False,
               previous: dict[str, Any] | None = None, noun: str = "host") -> str:  # fmt: skip
    """The report as text: hosts grouped by status, the worst group first, each problem on its own line.

    width: fit every line into that many columns (None: no limit); quiet: only the hosts with a problem
    (nothing at all when every host is compliant); previous: read_previous() of an earlier report, to
    say what changed since; noun: what a row is ("image" for an image check). Host data is shown with
    control characters escaped.
    """
    head = (noun.upper(), "OS", "DEFAULT KERNEL", "INITRD", "SETTING")
    shown = [r for r in ordered(rows) if not (quiet and r["status"] == "compliant")]
    cells = [tuple(printable(c) for c in (r["host"], os_text(r), r["default_kernel"] or "-", r["initrd"] or "-",
                                          r["setting"] or "-")) for r in shown]  # fmt: skip
    widths = [max([len(head[i])] + [len(c[i]) for c in cells]) for i in range(len(head))]
    if width:  # shrink the widest columns until a row fits (a cell cut short ends with '~')
        while sum(widths) + 2 * (len(widths) - 1) + 2 > width and max(widths) > 8:
            widths[widths.index(max(widths))] -= 1

    def line(values: tuple[str, ...]) -> str:
        fitted = [v if len(v) <= w else v[: w - 1] + "~" for v, w in zip(values, widths)]
        return ("  " + "  ".join(v.ljust(w) for v, w in zip(fitted, widths))).rstrip()

    out: list[str] = []
    for status in sorted(STATUSES, key=lambda s: -EXIT_CODES[s]):
        group = [(r, c) for r, c in zip(shown, cells) if r["status"] == status]
        if not group:
            continue
        out.append(f"{status.upper()}: {len(group)} {noun}{'s' if len(group) != 1 else ''}")
        out.append(line(head))
        for r, c in group:
            out.append(line(c))
            # advice findings are in the row's warnings too; the table shows them here, with their severity
            for p in problems(r) + [finding_line(f) for f in findings(r, blocking=False)]:
                wrapped = textwrap.wrap(printable(p), width - 6) if width and width > 30 else [printable(p)]
                out += ["      " + w for w in wrapped]
    if quiet and not shown:
        return ""
    summary = ", ".join(f"{n} {s}" for s, n in counts(rows).items() if n)
    out.append(f"{len(rows)} {noun}{'s' if len(rows) != 1 else ''}: {summary or 'none'}")
    if since := changes_text(rows, previous, quiet):
        out.append(since)
    return "\n".join(out)


