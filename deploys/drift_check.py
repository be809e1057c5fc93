"""Deprecated: use ``kvm-drivers check INVENTORY`` (kvm_drivers_cli/check.py), which never prompts, has a
per-host time limit, writes several report formats and refuses an empty --limit.

    pyinfra -y INVENTORY deploys/drift_check.py [--data report=PATH.json|.html|.prom|.xml|.txt]

Kept for existing users as a thin wrapper over the same check: the first host to reach this file
checks every host in pyinfra's scope (unreachable ones included), prints the table, writes the report
and ends the run with the check's exit code (0 compliant, 2 drifted, 3 unsupported, 4 error, 5 report
not written), whichever host finishes last. Do not combine it with other deploy files: it ends the run.
Limits of running under pyinfra: without -y, pyinfra asks whether to go on when a host cannot be
reached; a --limit that matches no host runs nothing and pyinfra exits 0.
"""

from pyinfra import host, state

from kvm_drivers_cli.check import legacy_deploy

legacy_deploy(state, {"report": host.data.get("report"), "check_timeout": host.data.get("check_timeout")})
