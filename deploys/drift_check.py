"""Report, without changing anything, which hosts would not boot on KVM.

    pyinfra [-y] INVENTORY deploys/drift_check.py [--data report=PATH.json|PATH.html]

(-y: do not stop at pyinfra's "hosts failed to connect, continue?" question; nothing is
changed either way, there is no operation.)

One remote command per host (the KvmDrivers fact). Prints one row per host, unreachable
hosts included, and exits 0 when every host is compliant, 2 when any drifted, 3 when any
is unsupported, 4 on any error (unreachable, unreadable state); the worst one wins.
Inventory data as for deploys/kvm_drivers.py (kvm_drivers, kvm_drivers_extra, kvm_kernels).
"""

from pathlib import Path

from pyinfra import host, state

from facts import report
from facts.kvm_drivers import GATHER_TIMEOUT, KvmDrivers

try:
    info = host.get_fact(
        KvmDrivers,
        drivers=host.data.get("kvm_drivers"),
        extra=host.data.get("kvm_drivers_extra"),
        kernels=host.data.get("kvm_kernels", "all"),
        _timeout=host.data.get("kvm_gather_timeout", GATHER_TIMEOUT),  # a host that never answers is an error
        _ignore_errors=True,  # a host whose state cannot be read is reported, not dropped
    )
    problem = "" if info is not None else "the state gathering command failed (see its output above)"
except Exception as exc:  # noqa: BLE001 - e.g. the connection dropped: report it as this host's error
    info, problem = None, f"{type(exc).__name__}: {exc}"
report.RESULTS[host.name] = report.host_row(host.name, info, problem)

if set(report.RESULTS) >= {h.name for h in state.active_hosts}:
    rows = []
    for h in state.inventory:
        if not state.is_host_in_limit(h):
            continue
        rows.append(report.RESULTS.get(h.name) or report.host_row(h.name, None, "unreachable: SSH connection failed"))
    print(report.text_table(rows), flush=True)
    target = host.data.get("report")
    if target:
        path = Path(target)
        path.write_text(report.to_html(rows) if path.suffix in (".html", ".htm") else report.to_json(rows))
        print(f"report written to {path}", flush=True)
    raise SystemExit(report.exit_code(rows))  # also ends the run before pyinfra asks to confirm (no operations)
