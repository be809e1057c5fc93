"""The kvm-drivers command line: ``kvm-drivers check INVENTORY`` (see check.py).

pyinfra runs hosts in gevent greenlets: like pyinfra's own CLI, importing this package patches the
standard library for gevent first, so SSH connections to many hosts proceed at once.
"""

from gevent import monkey

monkey.patch_all()
