# kvm-drivers: set-up, demo and tests. Run as root on Debian 12 (the lab needs namespaces).
PYTHON ?= python3
# What building the lab's base trees needs (debootstrap, and the built-in kernel's compile).
# The GRUB rescue CDs are made during the build too (grub-mkrescue: grub-common, grub-pc-bin, xorriso, mtools).
LAB_APT_PACKAGES = debootstrap e2fsprogs zstd xz-utils cpio util-linux build-essential flex bison bc libelf-dev \
	linux-source-6.1 grub-common grub-pc-bin xorriso mtools
# Images (issue 21): qemu-img, qemu-storage-daemon (FUSE export), bubblewrap (commands inside an image), lvm2
# (the lab makes an LVM image with it; the product reads LVM without it).
APT_PACKAGES = $(LAB_APT_PACKAGES) qemu-system-x86 openssh-client lz4 iproute2 grub-emu \
	grub-efi-amd64-bin grub-efi-amd64-signed ovmf fdisk dosfstools \
	btrfs-progs python3-rpm chromium \
	busybox gawk original-awk \
	qemu-utils qemu-system-common bubblewrap lvm2

.PHONY: setup deps lab-deps pydeps lab demo test test-quick lint down

# everything a fresh machine needs: packages, Python deps, the lab's base trees (its build runs its parts at
# once: debootstraps, the kernel compile, the rescue CDs). One after the other: the lab's build needs the
# Python packages (kvm_drivers imports distro) and its own apt packages, and nothing may race for them.
setup: lab-deps pydeps deps lab

lab-deps:
	@echo "== apt packages the lab's build needs: $(LAB_APT_PACKAGES)"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(LAB_APT_PACKAGES) >/dev/null

deps:
	@echo "== apt packages: $(APT_PACKAGES)"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null
	# gawk and busybox are there to test the host scripts under every awk; awk stays Debian's default (mawk)
	update-alternatives --set awk /usr/bin/mawk >/dev/null

pydeps:
	@echo "== Python packages (pyproject.toml, with test extras)"
	# PIP_BREAK_SYSTEM_PACKAGES: Debian 12's own python3 is PEP 668-managed; harmless elsewhere
	PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip install -q -e ".[test]"

lab:
	@echo "== lab base root filesystems (debootstrap once, then cached; built at once where they can)"
	$(PYTHON) -m tests.lab build

# A demo step whose non-zero exit is its point: `$(EXPECT) CODE WHY COMMAND...` echoes COMMAND, runs it and
# prints "(exit CODE: WHY, as expected)"; any other exit code stops the demo.
EXPECT = @$(PYTHON) -m tests.lab expect

demo: setup  ## the main job against the lab: check, deploy, check again, boot
	@echo "== 1/7 lab hosts up (fresh; each starts unable to boot on KVM, or refused, or already fine)"
	$(PYTHON) -m tests.lab up
	@echo "== 2/7 kvm-drivers check (changes nothing)"
	$(EXPECT) 3 "drifted and unsupported hosts found" \
		$(PYTHON) -m kvm_drivers check inventories/lab.py --report /tmp/kvm-drivers-before.html
	@echo "== 3/7 boot deb12-itools before the deploy (expected: ALERT! /dev/vda does not exist)"
	$(EXPECT) 1 "the boot failed" $(PYTHON) -m tests.lab boot deb12-itools
	@echo "== 4/7 deploy (the two unsupported hosts are refused by design)"
	$(EXPECT) 1 "the two unsupported hosts refused" $(PYTHON) -m pyinfra -y inventories/lab.py deploys/kvm_drivers.py
	@echo "== 5/7 deploy again (expected: no change anywhere)"
	$(EXPECT) 1 "the two unsupported hosts refused again" \
		$(PYTHON) -m pyinfra -y inventories/lab.py deploys/kvm_drivers.py
	@echo "== 6/7 kvm-drivers check again (expected: all compliant but the two unsupported hosts)"
	$(EXPECT) 3 "unsupported hosts found" \
		$(PYTHON) -m kvm_drivers check inventories/lab.py --report /tmp/kvm-drivers-after.html
	@echo "== 7/7 boot deb12-itools after the deploy (expected: BOOTED, virtio_blk bound)"
	$(PYTHON) -m tests.lab boot deb12-itools
	@$(PYTHON) -m tests.lab status --summary

# The whole suite, lab and slow tests included (what CI runs); plain `pytest` is the quick run.
test:
	$(PYTHON) -m pytest -m "lab or slow or not (lab or slow)"

test-quick:  ## what plain pytest runs: no lab, no root, under a minute
	$(PYTHON) -m pytest

lint:
	ruff check .

down:
	$(PYTHON) -m tests.lab down
