"""The test lab: real Debian root filesystems served over SSH on loopback, booted in QEMU.

``python -m tests.lab up|down|status|boot HOST|build`` drives it; tests use it as a library.
"""
