"""
Make every host boot on KVM: declare the virtio drivers and rebuild the initrds that lack them.

    pyinfra -y INVENTORY deploys/kvm_drivers.py          # apply
    pyinfra INVENTORY deploys/kvm_drivers.py --dry       # show which hosts would change

Inventory data (per host or group): ``kvm_drivers`` replaces the family's driver list,
``kvm_drivers_extra`` adds drivers (e.g. ``["virtio_console"]``), ``kvm_kernels`` is
``"all"`` (default), ``"default"`` or a list of kernel versions; ``kvm_remove_blacklists``
(default off) disables modprobe.d lines that stop a wanted driver loading.
One remote command gathers the state; a host already in the wanted state gets no other.
"""

from pyinfra import host

from facts.kvm_drivers import GATHER_TIMEOUT, KvmDrivers
from operations import kvm_drivers as kvm

settings = {
    "drivers": host.data.get("kvm_drivers"),
    "extra": host.data.get("kvm_drivers_extra"),
    "kernels": host.data.get("kvm_kernels", "all"),
}
info = host.get_fact(KvmDrivers, **settings, _timeout=host.data.get("kvm_gather_timeout", GATHER_TIMEOUT))

if info is None:
    pass  # the fact failed: pyinfra has already reported this host as failed
elif info["errors"]:
    kvm.fail_host(
        name="Refuse an unsupported or broken host",
        message=f"{'; '.join(info['errors'])} - nothing was changed on this host",
    )
else:
    kvm.report(info)
    run_id = kvm.new_run_id()  # ties the declaration's rollback copy to this run's rebuilds
    if host.data.get("kvm_remove_blacklists") and info["blacklisted"]:
        kvm.remove_blacklists(name="Remove modprobe.d blacklists of KVM drivers", info=info, run_id=run_id)
        # the initrds carry a copy of modprobe.d: rebuild them all
        info = {**info, "to_rebuild": [k["version"] for k in info["kernels"] if not k["too_old"]]}
    kvm.declare_drivers(name="Declare the KVM drivers", info=info, run_id=run_id)
    kvm.rebuild_initrds(name="Rebuild initrds lacking KVM drivers", info=info, run_id=run_id)
