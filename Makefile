# kvm-drivers: set-up, demo and tests. Run as root on Debian 12 (the lab needs namespaces).
PYTHON ?= python3
APT_PACKAGES = debootstrap qemu-system-x86 openssh-client e2fsprogs zstd lz4 xz-utils cpio iproute2 util-linux

.PHONY: setup deps lab demo test lint down

setup: deps lab  ## everything a fresh machine needs: packages, Python deps, the lab's base trees

deps:
	@echo "== apt packages: $(APT_PACKAGES)"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null
	@echo "== Python packages (pyproject.toml, with test extras)"
	$(PYTHON) -m pip install -q -e ".[test]"

lab:
	@echo "== lab base root filesystems (debootstrap once, then cached)"
	$(PYTHON) -m tests.lab build

demo: setup  ## the main job against the lab: deploy, deploy again, boot
	@echo "== 1/5 lab hosts up (fresh, each starts unable to boot on KVM)"
	$(PYTHON) -m tests.lab up
	@echo "== 2/5 boot deb12-itools before the deploy (expected: ALERT! /dev/vda does not exist)"
	-$(PYTHON) -m tests.lab boot deb12-itools
	@echo "== 3/5 deploy"
	$(PYTHON) -m pyinfra -y inventories/lab.py deploys/kvm_drivers.py
	@echo "== 4/5 deploy again (expected: no change anywhere)"
	$(PYTHON) -m pyinfra -y inventories/lab.py deploys/kvm_drivers.py
	@echo "== 5/5 boot deb12-itools after the deploy (expected: BOOTED, virtio_blk bound)"
	$(PYTHON) -m tests.lab boot deb12-itools

test:  ## the whole suite, lab included (what CI runs)
	$(PYTHON) -m pytest

lint:
	ruff check .

down:
	$(PYTHON) -m tests.lab down
