"""Test helper: a parsed answer straight to its plan (state, then plan), as the deploy does."""

from kvm_drivers.facts.state import host_state
from kvm_drivers.facts.wire import Snapshot
from kvm_drivers.operations.plan import Plan, plan
from kvm_drivers.operations.settings import Settings


def analyse(snap: Snapshot, drivers=None, extra=None, kernels="all") -> Plan:
    """plan(host_state(snap)) for these settings. Recorded answers from before gather.sh said which
    drivers it looked up are taken to have looked up what the deploy would ask for.
    """
    settings = Settings.read(drivers, extra, kernels)
    if not snap.drivers and snap.complete:
        snap.drivers = settings.lookup()
    return plan(host_state(snap), settings)
