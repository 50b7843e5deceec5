# Everything a fresh clone needs: `make run` boots the bundled guest,
# `make test` runs the whole suite, `make bench` compares against QEMU.
# Each sets up .venv and builds the guest first.
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed
QEMU := qemu-system-x86_64
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test bench guest qemu bytecode clean

# Editable in compat mode (a plain path entry): the default import-hook
# finder costs ~14 ms at every Python start, a tenth of vmm's start-up.
$(INSTALLED): pyproject.toml vmm/kvm/ffi_build.py vmm/_build/backend.py
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

# The benchmarks (and their smoke test) run QEMU's microvm and bubblewrap beside vmm.
qemu:
	@command -v $(QEMU) >/dev/null 2>&1 || { \
	    echo "installing qemu-system-x86 (for the benchmark comparison)"; \
	    $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q qemu-system-x86; }
	@command -v bwrap >/dev/null 2>&1 || { \
	    echo "installing bubblewrap (for vmm bench exec)"; \
	    $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q bubblewrap; }

run: bytecode guest
	$(VENV)/bin/vmm run

test: bytecode guest qemu
	$(VENV)/bin/python -m pytest -q

bench: bytecode guest qemu
	$(VENV)/bin/vmm bench

clean:
	rm -rf $(VENV) guest/build vmm/kvm/_kvm_cffi* *.egg-info
