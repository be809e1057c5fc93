"""``python3 -m kvm_drivers check INVENTORY ...``: the same as the ``kvm-drivers`` console script."""

import sys

from kvm_drivers.cli.check import main

sys.exit(main())
