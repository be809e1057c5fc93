"""An example inventory of a real fleet: copy it, replace the hosts, then run these.

    kvm-drivers check inventories/example_fleet.py --report fleet.html
    pyinfra -y inventories/example_fleet.py deploys/kvm_drivers.py --limit web

Groups are the module's lists; each host is a name or (name, data). Group-wide data lives
in ``group_data/<group>.py`` beside this file or, as here, in each host's dict. Keys:

- ``ssh_user``, ``ssh_key``, ``ssh_port``: how to log in; a non-root user needs ``_sudo``.
- ``_sudo``: run the gathering and the changes through sudo (passwordless sudo, or
  ``_sudo_password``).
- ``ssh_config_file``: an OpenSSH config; a ``ProxyJump bastion`` line there routes the
  hosts through a bastion (pyinfra's paramiko client honours it).
- ``kvm_drivers_extra``: drivers to add for a group (e.g. the console driver for a cloud
  whose serial console is virtio); ``kvm_drivers`` replaces the list; ``kvm_kernels``:
  ``"all"`` (default), ``"default"`` or a list of versions.
"""

_common = {"ssh_user": "deploy", "ssh_key": "~/.ssh/migration_ed25519", "_sudo": True}
_via_bastion = {**_common, "ssh_config_file": "~/.ssh/config.migration"}  # has: ProxyJump bastion

web = [
    ("web-01.dc1.example.com", {**_common, "kvm_drivers_extra": ["virtio_console"]}),
    ("web-02.dc1.example.com", {**_common, "kvm_drivers_extra": ["virtio_console"]}),
]
db = [
    ("db-01.dc1.example.com", {**_via_bastion, "kvm_kernels": "default"}),
]
legacy = [
    ("sles11-erp.dc2.example.com", {**_via_bastion, "ssh_user": "root", "_sudo": False}),
    ("centos6-billing.dc2.example.com", {**_via_bastion}),
]
