"""kvm-drivers: make Linux servers and images boot on KVM, virtio drivers in every initrd, proven.

The installed namespace. Its floors, each importing only the ones before it:
``kvm_drivers.hostside`` (the scripts run on a host; repo folder ``hostside/``),
``kvm_drivers.facts`` (gather and read a host's state; ``facts/``),
``kvm_drivers.operations`` (settings, the plan, the operations; ``operations/``),
``kvm_drivers.report`` (rows and report formats), ``kvm_drivers.cli`` (``kvm-drivers check``) and
``kvm_drivers.deploy`` (the pyinfra ``@deploy``; ``deploys/kvm_drivers.py`` is its entry file).
"""
