# Everything a fresh clone needs: `make run` boots the bundled guest,
# `make test` runs the whole suite. Both set up .venv and build the guest first.
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: run test bench guest clean

$(INSTALLED): pyproject.toml vmm/kvm/ffi_build.py vmm/_build/backend.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

guest:
	./build_guest.sh

run: $(INSTALLED) guest
	$(VENV)/bin/vmm run

test: $(INSTALLED) guest
	$(VENV)/bin/python -m pytest -q

bench: $(INSTALLED) guest
	$(VENV)/bin/vmm bench boot

clean:
	rm -rf $(VENV) guest/build vmm/kvm/_kvm_cffi* *.egg-info
