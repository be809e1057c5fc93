"""The drift report: one row per host from its plan (operations/plan.py), in text, JSON, Prometheus, JUnit XML or HTML.

JSON keys (stable, one object per host; see the README):
host, status, distro, family, version, generator, default_kernel, initrd, kernels
[{version, default, initrd, missing, builtin, absent, error}], default_missing,
fallback_missing {kernel: [drivers]}, blacklisted, declared, not_declared, setting,
errors, warnings. The whole JSON document is described by schemas/drift-report.schema.json.
Host data is untrusted: every format escapes it (control characters included).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import stat
import textwrap
import time
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvm_drivers.operations.plan import STATUSES

if TYPE_CHECKING:
    from kvm_drivers.operations.plan import Plan

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
            "warnings": [],
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
    }


def _running(state: Any) -> str | None:
    """The running kernel, and whether it is installed (it need not be: what boots next is checked)."""
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
    """One line per problem of a host: missing drivers per kernel, undeclared drivers, blacklists, errors."""
    out = []
    for k in row["kernels"]:
        if k["missing"]:
            mark = " (default)" if k["default"] and len(row["kernels"]) > 1 else ""
            out.append(f"missing from {k['initrd']} (kernel {k['version']}{mark}): {' '.join(k['missing'])}")
    if row["not_declared"]:
        out.append(f"not declared: {' '.join(row['not_declared'])}")
    out += [f"blacklisted: {b}" for b in row["blacklisted"]]
    out += [f"error: {e}" for e in row["errors"]]
    return out


def text_table(rows: list[dict], width: int | None = None, quiet: bool = False,
               previous: dict[str, Any] | None = None) -> str:  # fmt: skip
    """The report as text: hosts grouped by status, the worst group first, each problem on its own line.

    width: fit every line into that many columns (None: no limit); quiet: only the hosts with a problem
    (nothing at all when every host is compliant); previous: read_previous() of an earlier report, to
    say what changed since. Host data is shown with control characters escaped.
    """
    head = ("HOST", "OS", "DEFAULT KERNEL", "INITRD", "SETTING")
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
        out.append(f"{status.upper()}: {len(group)} host{'s' if len(group) != 1 else ''}")
        out.append(line(head))
        for r, c in group:
            out.append(line(c))
            for p in problems(r):
                wrapped = textwrap.wrap(printable(p), width - 6) if width and width > 30 else [printable(p)]
                out += ["      " + w for w in wrapped]
    if quiet and not shown:
        return ""
    summary = ", ".join(f"{n} {s}" for s, n in counts(rows).items() if n)
    out.append(f"{len(rows)} hosts: {summary or 'none'}")
    if since := changes_text(rows, previous, quiet):
        out.append(since)
    return "\n".join(out)


SCHEMA_VERSION = 1


def document(rows: list[dict], meta: dict | None = None) -> dict[str, Any]:
    """The whole report as one object (the JSON format; see schemas/drift-report.schema.json).

    meta: generated_at (Unix time), duration_seconds, exit_code (of the check; default: from the rows),
    previous (read_previous() of an earlier report: the document then says what changed since).
    """
    meta = meta or {}
    when = meta.get("generated_at", time.time())
    doc = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds"),
        "duration_seconds": round(float(meta.get("duration_seconds", 0.0)), 3),
        "exit_code": meta.get("exit_code", exit_code(rows)),
        "summary": counts(rows),
        "hosts": rows,
    }
    if meta.get("previous") is not None:  # --previous: what changed since that report
        doc["changes"] = {"since": meta["previous"]["generated_at"], "hosts": changes(rows, meta["previous"])}
    return doc


def to_json(rows: list[dict], meta: dict | None = None) -> str:
    """The report as JSON: {"schema_version", "generated_at", "exit_code", "summary", "hosts": [...]}."""
    return json.dumps(document(rows, meta), indent=2) + "\n"


def _label(value: object) -> str:
    """A Prometheus label value: control characters shown escaped, then backslash, quote and newline escaped."""
    return printable(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_prometheus(rows: list[dict], meta: dict | None = None) -> str:
    """The report as Prometheus text exposition format, for node_exporter's textfile collector."""
    doc = document(rows, meta)
    when = (meta or {}).get("generated_at", time.time())
    out: list[str] = []

    def metric(name: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            number = str(int(value)) if float(value).is_integer() else repr(float(value))  # full precision
            out.append(f"{name}{{{text}}} {number}" if labels else f"{name} {number}")

    metric("kvm_drivers_host_status", "1 for the host's status in the last check, 0 for the other statuses.",
           [({"host": r["host"], "status": s, "family": r["family"] or ""}, float(r["status"] == s))
            for r in rows for s in STATUSES])  # fmt: skip
    metric("kvm_drivers_missing_modules", "Modules the initrd of a kernel lacks (0: nothing missing).",
           [({"host": r["host"], "kernel": k["version"]}, float(len(k["missing"]))) for r in rows
            for k in r["kernels"]])  # fmt: skip
    metric("kvm_drivers_undeclared_drivers", "Wanted drivers the host's initrd configuration does not declare.",
           [({"host": r["host"]}, float(len(r["not_declared"]))) for r in rows])
    metric("kvm_drivers_hosts", "Hosts per status in the last check.",
           [({"status": s}, float(n)) for s, n in doc["summary"].items()])
    if "changes" in doc:
        found = doc["changes"]["hosts"]
        metric("kvm_drivers_changed_hosts", "Hosts whose status changed since the previous report, per kind of "
               "change (worse, better, new, gone).", [({"change": k}, float(sum(c["change"] == k for c in found)))
                                                     for k in CHANGES])  # fmt: skip
        metric("kvm_drivers_host_status_change", "1 for each host whose status changed since the previous report.",
               [({"host": c["host"], "before": c["before"] or "", "after": c["after"] or "", "change": c["change"]},
                 1.0) for c in found])  # fmt: skip
    metric("kvm_drivers_check_hosts", "Hosts in scope of the last check.", [({}, float(len(rows)))])
    metric("kvm_drivers_check_exit_code", "Exit code of the last check (0: every host checked and compliant).",
           [({}, float(doc["exit_code"]))])
    metric("kvm_drivers_check_duration_seconds", "Wall time of the last check.", [({}, doc["duration_seconds"])])
    metric("kvm_drivers_check_timestamp_seconds", "Unix time the last check ended.", [({}, float(when))])
    return "\n".join(out) + "\n"


def _xml_text(value: object) -> str:
    """Text XML 1.0 can carry: control characters shown escaped (ElementTree escapes <, & and quotes)."""
    return printable(value)


def to_junit(rows: list[dict], meta: dict | None = None) -> str:
    """The report as JUnit XML: one test case per host; drifted and unsupported hosts fail, unchecked ones error."""
    doc = document(rows, meta)
    c = doc["summary"]
    was = {x["host"]: x["before"] or "none (new host)" for x in doc.get("changes", {}).get("hosts", [])}
    suite = ET.Element("testsuite", {
        "name": "kvm-drivers drift check", "tests": str(len(rows)), "failures": str(c["drifted"] + c["unsupported"]),
        "errors": str(c["error"]), "skipped": "0", "timestamp": doc["generated_at"],
        "time": f"{doc['duration_seconds']:.3f}",
    })  # fmt: skip
    for r in ordered(rows):
        case = ET.SubElement(suite, "testcase", {"classname": _xml_text(f"kvm-drivers.{r['family'] or 'unknown'}"),
                                                  "name": _xml_text(r["host"])})  # fmt: skip
        if r["status"] == "compliant":
            continue
        lines = problems(r)
        if r["status"] == "drifted":
            missing = sorted({d for k in r["kernels"] for d in k["missing"]})
            message = f"missing from the initrd: {' '.join(missing)}" if missing else (lines or ["drifted"])[0]
            kind = "failure"
        else:
            message = (r["errors"] or lines or [r["status"]])[0]
            kind = "failure" if r["status"] == "unsupported" else "error"
        el = ET.SubElement(case, kind, {"type": r["status"], "message": _xml_text(message)})
        if r["host"] in was:
            lines = [*lines, f"status in the previous report: {was[r['host']]}"]
        el.text = "\n".join(_xml_text(line) for line in lines + [f"warning: {w}" for w in r["warnings"]])
    root = ET.Element("testsuites", {k: suite.get(k, "") for k in ("tests", "failures", "errors", "time")})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


COLOURS = {"compliant": "#d4edda", "drifted": "#fff3cd", "unsupported": "#e2e3e5", "error": "#f8d7da"}
HTML_JS = (Path(__file__).parent / "report.js").read_text()
HTML_CSS = (Path(__file__).parent / "report.css").read_text()


def _details_html(r: dict) -> str:
    """The expandable part of a host's row: every kernel, problem and message."""
    esc = lambda v: html.escape(printable(v))  # noqa: E731
    kernels = "".join(
        f"<tr><td>{esc(k['version'])}{' (default)' if k['default'] else ''}</td><td>{esc(k['initrd'] or '-')}</td>"
        f"<td>{esc(' '.join(k['missing']) or '-')}</td><td>{esc(' '.join(k['builtin']) or '-')}</td>"
        f"<td>{esc(' '.join(k['absent']) or '-')}</td><td>{esc(k['error'] or '')}</td></tr>"
        for k in r["kernels"]
    )
    parts = []
    if kernels:
        parts.append('<table class="kernels"><thead><tr><th>Kernel</th><th>Initrd</th><th>Missing</th><th>Built in</th>'
                     f"<th>Absent</th><th>Initrd error</th></tr></thead><tbody>{kernels}</tbody></table>")
    facts = [("Generator", r["generator"]), ("Setting", r["setting"]), ("Declared", declared_text(r)),
             ("Running kernel", r.get("running_kernel"))]  # fmt: skip
    parts.append("<p>" + " &middot; ".join(f"<b>{n}:</b> {esc(v or '-')}" for n, v in facts) + "</p>")
    for title, items in (("Errors", r["errors"]), ("Blacklisted", r["blacklisted"]), ("Warnings", r["warnings"])):
        if items:
            parts.append(f"<p><b>{title}:</b></p><ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")
    return "".join(parts)


def to_html(rows: list[dict], meta: dict | None = None, title: str = "kvm-drivers drift report") -> str:
    """The report as a self-contained HTML page: counts, filters by status and family, search, host details."""
    doc = document(rows, meta)
    esc = lambda v: html.escape(printable(v))  # noqa: E731
    families = sorted({r["family"] or "" for r in rows})
    badges = "".join(
        f'<label class="badge" style="background:{COLOURS[s]}"><input type="checkbox" name="status" value="{s}" '
        f'checked> <span class="n">{n}</span> {s}</label>'
        for s, n in doc["summary"].items()
    )
    options = "".join(f'<option value="{esc(f)}">{esc(f or "unknown")}</option>' for f in families)
    head = ["Host", "Status", "OS", "Default kernel", "Missing", "Declared", "Setting"]
    changed = {c["host"]: c for c in doc.get("changes", {}).get("hosts", [])}
    body = []
    for i, r in enumerate(ordered(rows)):
        change = changed.get(r["host"])
        was = "" if not change else "new" if change["before"] is None else f"was {change['before']}"
        search = " ".join([r["host"], r["status"], was, os_text(r), r["default_kernel"] or "", missing_text(r),
                           *r["errors"], *r["warnings"]]).lower()  # fmt: skip
        cells = [os_text(r), r["default_kernel"] or "-", missing_text(r), declared_text(r), r["setting"] or "-"]
        tds = "".join(f"<td>{esc(c)}</td>" for c in cells)
        mark = f' <span class="was {change["change"]}">({was})</span>' if change else ""
        body.append(
            f'<tr class="{r["status"]}" id="h{i}" style="background:{COLOURS[r["status"]]}" '
            f'data-status="{r["status"]}" data-family="{esc(r["family"] or "")}" '
            f'data-changed="{change["change"] if change else ""}" data-search="{esc(search)}">'
            f'<td><button type="button" class="toggle" aria-expanded="false" aria-controls="d{i}">&#9656;</button> '
            f'<span class="host">{esc(r["host"])}</span></td><td>{r["status"]}{mark}</td>{tds}</tr>'
            f'<tr class="details" id="d{i}" hidden><td colspan="{len(head)}">{_details_html(r)}</td></tr>'
        )
    compared, only_changed = "", ""
    if "changes" in doc:
        found = doc["changes"]["hosts"]
        kinds = ", ".join(f"{sum(c['change'] == k for c in found)} {k}" for k in CHANGES)
        gone = [c["host"] for c in found if c["change"] == "gone"]
        compared = (f'<p class="meta" id="changes">Compared with the report of {esc(doc["changes"]["since"] or "?")}: '
                    f"{len(found)} hosts changed ({kinds})"
                    + (f"; not in this check: {esc(', '.join(gone))}" if gone else "") + ".</p>")  # fmt: skip
        only_changed = '<label><input type="checkbox" id="changed"> only hosts changed since then</label>'
    script_hash = base64.b64encode(hashlib.sha256(HTML_JS.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"
    when = doc["generated_at"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<title>{esc(title)}</title>
<style>{HTML_CSS}</style></head><body>
<h1>{esc(title)}</h1>
<p class="meta">{len(rows)} hosts checked at {when} in {doc["duration_seconds"]:g} s; exit code {doc["exit_code"]}.</p>
{compared}
<form id="filters">
<div class="badges">{badges}</div>{only_changed}
<label>Family <select id="family"><option value="*">all</option>{options}</select></label>
<label>Search <input type="search" id="search" placeholder="host, OS, kernel, driver, message"></label>
<button type="button" id="expand">Expand all</button> <button type="button" id="collapse">Collapse all</button>
<span id="shown">{len(rows)} of {len(rows)} hosts shown</span>
</form>
<table id="hosts"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<p class="meta">Worst status first. Click a host to see its kernels and messages; click a column header to sort.</p>
<script>{HTML_JS}</script>
</body></html>
"""


# Report formats by file suffix.
FORMATS: dict[str, Callable[[list[dict], dict | None], str]] = {
    ".json": to_json, ".prom": to_prometheus, ".xml": to_junit, ".html": to_html, ".htm": to_html,
    ".txt": lambda rows, meta=None: text_table(rows, previous=(meta or {}).get("previous")) + "\n",
}  # fmt: skip


def render(path: str | Path, rows: list[dict], meta: dict | None = None) -> str:
    """The report in the format its file suffix names (ValueError for an unknown suffix)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown report format {suffix or '(no suffix)'!r}; use one of {', '.join(FORMATS)}")
    return FORMATS[suffix](rows, meta)


def write_atomic(path: str | Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never a part (temporary file, rename)."""
    path = Path(path)
    # The temporary name must not end in .prom: node_exporter's textfile collector reads *.prom.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_report(path: str | Path, rows: list[dict], meta: dict | None = None) -> None:
    """Render and write one report (format from the suffix), atomically."""
    write_atomic(path, render(path, rows, meta))
