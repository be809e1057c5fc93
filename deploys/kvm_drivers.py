"""
Make every host boot on KVM: declare the virtio drivers and rebuild the initrds that lack them.

    pyinfra -y INVENTORY deploys/kvm_drivers.py          # apply
    pyinfra INVENTORY deploys/kvm_drivers.py --dry       # show which hosts would change (--diff: how)

Settings come from each host's inventory data (see ``operations/settings.py``):
``kvm_drivers`` replaces the family's driver list, ``kvm_drivers_extra`` adds drivers (e.g.
``["virtio_console"]``), ``kvm_kernels`` is ``"all"`` (default), ``"default"`` or a list of kernel
versions; ``kvm_remove_blacklists`` (default off) disables modprobe.d lines that stop a wanted
driver loading; ``kvm_gather_timeout`` and ``kvm_change_timeout`` limit each step (seconds).
One remote command gathers the state; a host already in the wanted state gets no other.
"""

from pyinfra import host

from kvm_drivers.deploy import kvm_drivers
from kvm_drivers.operations.settings import data_arguments

kvm_drivers(**data_arguments(host.data))
