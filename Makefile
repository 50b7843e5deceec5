# Everything a fresh clone needs: `make run` boots the bundled guest,
# `make test` runs the whole suite, `make bench` compares against QEMU.
# Each sets up .venv and builds the guest first.
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed
QEMU := qemu-system-x86_64
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test test-linux linux-kernel bench guest tools qemu bytecode clean fuzz fuzz-merge

# Editable in compat mode (a plain path entry): the default import-hook
# finder costs ~14 ms at every Python start, a tenth of vmm's start-up.
$(INSTALLED): pyproject.toml vmm/kvm/ffi_build.py vmm/kvm/virtio_fast_build.py vmm/kvm/virtio_fast.c vmm/_build/backend.py vmm/_build/scripts/vmm
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]'
	touch $@

guest:
	./build_guest.sh

# Compile vmm's bytecode ahead, as a wheel install does: an editable install
# otherwise compiles every module at each start wherever PYTHONDONTWRITEBYTECODE
# is set (it is on these machines), which doubles vmm's start-up time. Then
# pack it into one file that vmm imports from (vmm/module_pack.py: ~2 ms a command).
bytecode: $(INSTALLED)
	$(VENV)/bin/python -m compileall -q vmm
	$(VENV)/bin/python -c 'import vmm.module_pack as p; p.main()'

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
	@# Linux boot times (about a minute a boot here, beside QEMU): needs the microVM kernel (make linux-kernel)
	$(VENV)/bin/vmm bench linux || echo "vmm bench linux: skipped or failed (make linux-kernel builds its kernel)"

# Coverage-guided fuzzing (tests/fuzz, atheris): each target for FUZZ_SECONDS,
# one after another at low priority. New inputs go to fuzz-out/corpus/<target>
# (fold them into the repository's small corpus with `make fuzz-merge`); an
# input that breaks a contract is saved as tests/fuzz/corpus/<target>/crash-*,
# so `make test` (tests/fuzz/test_corpus_replay.py) fails on it until it is fixed.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= mmio queue block console elf multiboot bzimage snapshot api
FUZZ_OPTIONS := -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1
FUZZ_INSTALLED := $(VENV)/.fuzz-installed

$(FUZZ_INSTALLED): $(INSTALLED)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e '.[test,fuzz]'
	touch $@

fuzz: bytecode guest $(FUZZ_INSTALLED)
	@for t in $(FUZZ_TARGETS); do \
	    mkdir -p fuzz-out/corpus/$$t; \
	    echo "fuzz $$t: $(FUZZ_SECONDS) s (log: fuzz-out/$$t.log)"; \
	    nice -n 19 $(VENV)/bin/python -m tests.fuzz.run $$t fuzz-out/corpus/$$t tests/fuzz/corpus/$$t \
	        -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=tests/fuzz/corpus/$$t/crash- $(FUZZ_OPTIONS) \
	        > fuzz-out/$$t.log 2>&1 || { tail -40 fuzz-out/$$t.log; exit 1; }; \
	    grep -h "^stat::number_of_executed_units\|^stat::average_exec_per_sec" fuzz-out/$$t.log; \
	done

# Minimise the repository's corpus and fuzz-out's into the repository (seed-*,
# regress-* and crash-* entries stay as they are).
fuzz-merge: $(FUZZ_INSTALLED)
	@for t in $(FUZZ_TARGETS); do \
	    rm -rf fuzz-out/merge/$$t && mkdir -p fuzz-out/merge/$$t fuzz-out/corpus/$$t; \
	    nice -n 19 $(VENV)/bin/python -m tests.fuzz.run $$t -merge=1 fuzz-out/merge/$$t tests/fuzz/corpus/$$t fuzz-out/corpus/$$t \
	        $(FUZZ_OPTIONS) > fuzz-out/$$t-merge.log 2>&1 || { tail -20 fuzz-out/$$t-merge.log; exit 1; }; \
	    find tests/fuzz/corpus/$$t -type f ! -name 'seed-*' ! -name 'regress-*' ! -name 'crash-*' -delete; \
	    cp fuzz-out/merge/$$t/* tests/fuzz/corpus/$$t/ 2>/dev/null || true; \
	    echo "$$t: $$(ls tests/fuzz/corpus/$$t | wc -l) inputs, $$(du -sk tests/fuzz/corpus/$$t | cut -f1) KiB"; \
	done

clean:
	rm -rf $(VENV) guest/build vmm/kvm/_kvm_cffi* *.egg-info fuzz-out
