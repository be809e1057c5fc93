"""The deploy as a file pyinfra runs, installed with the package (``deploys/kvm_drivers.py`` is the
clone's copy): ``kvm-drivers image fix`` hands it to pyinfra with an ``@kvmimage/PATH`` host.
"""

from pyinfra import host

from kvm_drivers.deploy import kvm_drivers
from kvm_drivers.operations.settings import data_arguments

kvm_drivers(**data_arguments(host.data))
