# Everything a fresh clone needs: `make run` boots the bundled guest,
# `make test` runs the whole suite, `make bench` compares against QEMU.
# Each sets up .venv and builds the guest first.
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed
QEMU := qemu-system-x86_64
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test test-linux linux-kernel bench guest tools qemu bytecode clean

# Editable in compat mode (a plain path entry): the default import-hook
# finder costs ~14 ms at every Python start, a tenth of vmm's start-up.
$(INSTALLED): pyproject.toml vmm/kvm/ffi_build.py vmm/kvm/virtio_fast_build.py vmm/kvm/virtio_fast.c vmm/_build/backend.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]'
	touch $@

guest:
	./build_guest.sh

# Compile vmm's bytecode ahead, as a wheel install does: an editable install
# otherwise compiles every module at each start wherever PYTHONDONTWRITEBYTECODE
# is set (it is on these machines), which doubles vmm's start-up time.
bytecode: $(INSTALLED)
	$(VENV)/bin/python -m compileall -q vmm

# Debian packages the tests and benchmarks run beside vmm or build with, as
# command:package: QEMU (microvm and TCG comparisons), busybox-static (the
# sandbox runs its applets), musl-gcc (static musl test programs), iasl
# (checks the ACPI tables vmm generates), curl (drives the API socket as
# Firecracker users do), bwrap (vmm bench exec's namespace-only contender).
# Installed when missing.
TEST_TOOLS := qemu-system-x86_64:qemu-system-x86 busybox:busybox-static musl-gcc:musl-tools iasl:acpica-tools curl:curl bwrap:bubblewrap

tools:
	@missing=""; for pair in $(TEST_TOOLS); do \
	    command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	    echo "installing$$missing (the tests and benchmarks use them)"; \
	    $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; fi

qemu: tools

run: bytecode guest
	$(VENV)/bin/vmm run

test: bytecode guest tools
	$(VENV)/bin/python -m pytest -q

# vmm's microVM Linux kernel (guest/linux_kernel/): built from Debian's
# linux-source-6.1 (installed when missing) into ~/.cache/vmm/kernels, again
# only when its config fragment changes. About 10-15 minutes on 2 cores.
linux-kernel:
	guest/linux_kernel/build.sh

# Linux booted to userspace (tests/linux, marker `linux`): the microVM kernel,
# built first when missing. Not part of `make test` (a boot takes a minute or
# more on a software KVM). Debian's cloud kernel, the distribution-kernel case
# (15-20 minutes a boot), runs only with VMM_TEST_DEBIAN_KERNEL=1, after
# tests/linux/fetch_kernel.sh.
test-linux: bytecode guest tools linux-kernel
	VMM_TEST_LINUX=1 $(VENV)/bin/python -m pytest -q -m linux tests/linux

bench: bytecode guest tools
	$(VENV)/bin/vmm bench

clean:
	rm -rf $(VENV) guest/build vmm/kvm/_kvm_cffi* *.egg-info
