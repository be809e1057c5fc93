"""The report's formats: JSON (schemas/drift-report.schema.json), Prometheus, JUnit XML and HTML,
chosen by a file's suffix and written atomically. Host data is untrusted: every format escapes it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kvm_drivers.operations.plan import STATUSES
from kvm_drivers.report.rows import (
    CHANGES,
    SCHEMA_VERSION,
    changes,
    counts,
    declared_text,
    exit_code,
    finding_line,
    findings,
    missing_text,
    ordered,
    os_text,
    plain_warnings,
    printable,
    problems,
    remedy_text,
    text_table,
)


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
    found: dict[tuple[str, str, str], int] = {}
    for r in rows:
        for f in r["boot_path"]:
            found[(r["host"], f["kind"], f["severity"])] = found.get((r["host"], f["kind"], f["severity"]), 0) + 1
    if found:  # only what was found: no zero samples, and no family at all when nothing was
        metric("kvm_drivers_boot_path_findings", "Findings beyond the initrd per host, kind and severity (blocks "
               "boot, blocks network, advice).",
               [({"host": h, "kind": k, "severity": s}, float(n)) for (h, k, s), n in found.items()])  # fmt: skip
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


def _finding_cases(rows: list[dict]) -> list[tuple[dict, str, list[dict]]]:
    """(row, kind, its findings) for each host and kind of finding that blocks boot or network."""
    out = []
    for r in ordered(rows):
        kinds: dict[str, list[dict]] = {}
        for f in findings(r, blocking=True):
            kinds.setdefault(f["kind"], []).append(f)
        out += [(r, kind, found) for kind, found in kinds.items()]
    return out


def to_junit(rows: list[dict], meta: dict | None = None) -> str:
    """The report as JUnit XML: one test case per host (drifted and unsupported hosts fail, unchecked ones
    error), then one failed test case per host and kind of boot-path finding that blocks boot or network
    (class kvm-drivers.boot-path.KIND, named after the host). Advice is in the host's case's text.
    """
    doc = document(rows, meta)
    c = doc["summary"]
    was = {x["host"]: x["before"] or "none (new host)" for x in doc.get("changes", {}).get("hosts", [])}
    blocking = _finding_cases(rows)
    suite = ET.Element("testsuite", {
        "name": "kvm-drivers drift check", "tests": str(len(rows) + len(blocking)),
        "failures": str(c["drifted"] + c["unsupported"] + len(blocking)),
        "errors": str(c["error"]), "skipped": "0", "timestamp": doc["generated_at"],
        "time": f"{doc['duration_seconds']:.3f}",
    })  # fmt: skip
    for r in ordered(rows):
        case = ET.SubElement(suite, "testcase", {"classname": _xml_text(f"kvm-drivers.{r['family'] or 'unknown'}"),
                                                  "name": _xml_text(r["host"])})  # fmt: skip
        if r["status"] == "compliant":
            if advice := findings(r, blocking=False):  # passed: the advice is the case's output
                ET.SubElement(case, "system-out").text = "\n".join(_xml_text(finding_line(f)) for f in advice)
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
        lines += [f"warning: {w}" for w in plain_warnings(r)] + [finding_line(f) for f in findings(r, blocking=False)]
        el.text = "\n".join(_xml_text(line) for line in lines)
    for r, kind, found in blocking:
        case = ET.SubElement(suite, "testcase", {"classname": f"kvm-drivers.boot-path.{kind}",
                                                  "name": _xml_text(r["host"])})  # fmt: skip
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        el = ET.SubElement(case, "failure", {"type": found[0]["severity"],
                                             "message": _xml_text(finding_line(found[0]) + more)})  # fmt: skip
        el.text = "\n".join(_xml_text(line) for f in found
                            for line in [finding_line(f)] + ([f"  the line: {f['text']}"] if f["text"] else []))
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
    for title, items in (("Errors", r["errors"]), ("Blacklisted", r["blacklisted"]), ("Warnings", plain_warnings(r))):
        if items:
            parts.append(f"<p><b>{title}:</b></p><ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")
    if r["boot_path"]:
        found = "".join(
            f"<tr><td>{_severity_badge(f['severity'])}</td><td>{esc(f['kind'])}</td>"
            f"<td>{esc(f['where'])}{esc(' line ' + str(f['line'])) if f['line'] else ''}</td>"
            f"<td><code>{esc(f['text'])}</code></td><td>{esc(f['message'])}</td><td>{esc(remedy_text(f))}</td></tr>"
            for f in findings(r)
        )
        parts.append('<p><b>Boot path on KVM:</b></p><table class="findings"><thead><tr><th>Severity</th><th>Kind</th>'
                     "<th>Where</th><th>Line as written</th><th>What</th><th>Fix</th></tr></thead>"
                     f"<tbody>{found}</tbody></table>")
    return "".join(parts)


SEVERITY_CLASSES = {"blocks boot": "boot", "blocks network": "network", "advice": "advice"}


def _severity_badge(severity: str) -> str:
    """A finding's severity as a coloured badge (class sev-boot, sev-network or sev-advice)."""
    return f'<span class="sev sev-{SEVERITY_CLASSES.get(severity, "advice")}">{html.escape(printable(severity))}</span>'


def _findings_cell(r: dict) -> str:
    """The host's boot-path findings counted per severity, as badges ('-' when none)."""
    counted = [(s, sum(f["severity"] == s for f in r["boot_path"])) for s in SEVERITY_CLASSES]
    return " ".join(f"{_severity_badge(s)}&nbsp;{n}" for s, n in counted if n) or "-"


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
    head = ["Host", "Status", "OS", "Default kernel", "Missing", "Declared", "Setting", "Boot path"]
    changed = {c["host"]: c for c in doc.get("changes", {}).get("hosts", [])}
    body = []
    for i, r in enumerate(ordered(rows)):
        change = changed.get(r["host"])
        was = "" if not change else "new" if change["before"] is None else f"was {change['before']}"
        search = " ".join([r["host"], r["status"], was, os_text(r), r["default_kernel"] or "", missing_text(r),
                           *r["errors"], *r["warnings"], *(f"{f['severity']} {f['kind']} {f['where']} {f['message']}"
                                                            for f in r["boot_path"])]).lower()  # fmt: skip
        cells = [os_text(r), r["default_kernel"] or "-", missing_text(r), declared_text(r), r["setting"] or "-"]
        tds = "".join(f"<td>{esc(c)}</td>" for c in cells) + f'<td class="found">{_findings_cell(r)}</td>'
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
<label>Search <input type="search" id="search" placeholder="host, OS, kernel, driver, message, finding"></label>
<button type="button" id="expand">Expand all</button> <button type="button" id="collapse">Collapse all</button>
<span id="shown">{len(rows)} of {len(rows)} hosts shown</span>
</form>
<table id="hosts"><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<p class="meta">Worst status first. Click a host to see its kernels, messages and boot-path findings (blocks boot,
blocks network, advice); click a column header to sort.</p>
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
