"""The kvm-drivers command line: ``kvm-drivers check INVENTORY`` (see check.py).

pyinfra runs hosts in gevent greenlets: like pyinfra's own CLI, importing this package first patches
the standard library for gevent, so SSH connections to many hosts proceed at once. Not twice: inside a
pyinfra run pyinfra has done it already, and patching ssl again recurses.
"""

from gevent import monkey

if not monkey.is_module_patched("socket"):
    monkey.patch_all()
