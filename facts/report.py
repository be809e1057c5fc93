"""The drift report: one row per host from the KvmDrivers fact, as a text table, JSON or HTML.

JSON keys (stable, one object per host; see the README):
host, status, distro, family, version, generator, default_kernel, initrd, kernels
[{version, default, initrd, missing, builtin, absent, error}], default_missing,
fallback_missing {kernel: [drivers]}, blacklisted, declared, not_declared, setting,
errors, warnings.
"""

from __future__ import annotations

import html
import json
from typing import Any

# host name -> report row, filled by deploys/drift_check.py as each host's fact arrives.
RESULTS: dict[str, dict] = {}
STATUSES = ("compliant", "drifted", "unsupported", "error")
# Exit codes of the drift check: the worst status found decides.
EXIT_CODES = {"compliant": 0, "drifted": 2, "unsupported": 3, "error": 4}


def host_row(name: str, info: dict | None, error: str = "") -> dict[str, Any]:
    """One host's report object (info None: the host could not be read; error says why)."""
    if info is None:
        return {
            "host": name, "status": "error", "distro": None, "family": None, "version": None,
            "generator": None, "default_kernel": None, "initrd": None, "kernels": [], "default_missing": [],
            "fallback_missing": {}, "blacklisted": [], "declared": None,
            "not_declared": [], "setting": None, "errors": [error or "state could not be gathered"],
            "warnings": [],
        }  # fmt: skip
    kernels = info["kernels"]
    default = next((k for k in kernels if k["default"]), kernels[0] if kernels else None)
    return {
        "host": name,
        "status": info["status"],
        "distro": info["distro"]["name"],
        "family": info["distro"]["family"],
        "version": info["distro"]["version"],
        "generator": info["generator"],
        "default_kernel": default["version"] if default else None,
        "initrd": default["initrd"] if default else None,
        "kernels": [
            {
                "version": k["version"],
                "default": k["default"],
                "initrd": k["initrd"],
                "missing": k["missing"],
                "builtin": k["builtin"],
                "absent": k["absent"],
                "error": k["initrd_error"] or None,
            }
            for k in kernels
        ],
        "default_missing": default["missing"] if default else [],
        "fallback_missing": {k["version"]: k["missing"] for k in kernels if k is not default and k["missing"]},
        "blacklisted": [f"{b['file']}:{b['line']}: {b['text'].strip()}" for b in info.get("blacklisted", [])],
        "declared": not info["to_declare"],
        "not_declared": info["to_declare"],
        "setting": info["declared"]["setting"] or None,
        "errors": info["errors"],
        "warnings": info["warnings"],
    }


def exit_code(rows: list[dict]) -> int:
    """0 when every host is compliant, else the code of the worst status."""
    return max([EXIT_CODES[r["status"]] for r in rows] or [0])


def counts(rows: list[dict]) -> dict[str, int]:
    """Number of hosts per status."""
    return {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES}


def missing_text(row: dict) -> str:
    """Missing drivers, per kernel when several are installed ('-' when none)."""
    parts = []
    for k in row["kernels"]:
        if k["missing"] or k["error"]:
            what = " ".join(k["missing"]) + (f" ({k['error']})" if k["error"] else "")
            mark = "*" if k["default"] else ""
            parts.append(f"{k['version']}{mark}: {what}" if len(row["kernels"]) > 1 else what)
    return "; ".join(parts) or "-"


def text_table(rows: list[dict]) -> str:
    """The report as a plain text table, then one line per error."""
    head = ("HOST", "STATUS", "OS", "DEFAULT KERNEL", "INITRD", "MISSING", "DECLARED", "SETTING")
    lines = [head]
    for r in rows:
        os_name = f"{r['family'] or '?'} {r['distro'] or ''} {r['version'] or ''}".strip()
        declared = "-" if r["declared"] is None else "yes" if r["declared"] else "no: " + " ".join(r["not_declared"])
        lines.append((r["host"], r["status"], os_name, r["default_kernel"] or "-", r["initrd"] or "-",
                      missing_text(r), declared, r["setting"] or "-"))  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    for r in rows:
        out += [f"{r['host']}: {e}" for e in r["errors"]]
    summary = ", ".join(f"{n} {s}" for s, n in counts(rows).items() if n)
    out.append(f"{len(rows)} hosts: {summary or 'none'}")
    return "\n".join(out)


def to_json(rows: list[dict]) -> str:
    """The report as JSON: {"summary": {...}, "hosts": [...]}."""
    return json.dumps({"summary": counts(rows), "exit_code": exit_code(rows), "hosts": rows}, indent=2)


COLOURS = {"compliant": "#d4edda", "drifted": "#fff3cd", "unsupported": "#e2e3e5", "error": "#f8d7da"}

SORT_JS = """
document.querySelectorAll('th').forEach((th, i) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const asc = th.dataset.asc = th.dataset.asc === '1' ? '0' : '1';
  [...body.rows].sort((a, b) => a.cells[i].innerText.localeCompare(b.cells[i].innerText, undefined,
    {numeric: true}) * (asc === '1' ? 1 : -1)).forEach(r => body.appendChild(r));
}));
"""


def to_html(rows: list[dict], title: str = "kvm-drivers drift report") -> str:
    """The report as a self-contained HTML page: summary counts and a sortable table."""
    esc = html.escape
    summary = "".join(
        f'<span class="badge" style="background:{COLOURS[s]}">{n} {s}</span>' for s, n in counts(rows).items()
    )
    head = ["Host", "Status", "OS", "Default kernel", "Initrd", "Missing", "Declared", "Setting", "Messages"]
    body = []
    for r in rows:
        declared = "-" if r["declared"] is None else "yes" if r["declared"] else "no: " + " ".join(r["not_declared"])
        os_name = f"{r['distro'] or '?'} {r['version'] or ''} ({r['family'] or 'unsupported'})"
        messages = "<br>".join(esc(m) for m in r["errors"] + r["warnings"])
        cells = [r["host"], r["status"], os_name, r["default_kernel"] or "-", r["initrd"] or "-",
                 missing_text(r), declared, r["setting"] or "-"]  # fmt: skip
        tds = "".join(f"<td>{esc(str(c))}</td>" for c in cells) + f"<td>{messages}</td>"
        body.append(f'<tr class="{r["status"]}" style="background:{COLOURS[r["status"]]}">{tds}</tr>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.9em; }}
th, td {{ border: 1px solid #bbb; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #343a40; color: #fff; cursor: pointer; user-select: none; }}
.badge {{ display: inline-block; padding: 4px 10px; margin-right: 8px; border-radius: 4px; font-weight: bold; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p>{len(rows)} hosts: {summary}</p>
<table><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<p>Click a column header to sort. Exit code of this run: {exit_code(rows)}.</p>
<script>{SORT_JS}</script>
</body></html>
"""
