# The README's commands are `make demo` and `make test`; the rest is their plumbing.
# `make test` stops at the first failing stage; every stage prints a banner first.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

VENV := .venv
PY := $(VENV)/bin/python
SUITES := sid trixie
# Seconds for one VM run (boot + the kernel tests) under TCG on 2 shared cores.
KERNEL_TIMEOUT := 2400
# What the VM stages run; narrow it while working: make kernel-sid KERNEL_TESTS=tests/kernel/test_io.py
KERNEL_TESTS := tests/kernel
# The VM's real disk (/dev/vda, virtio-blk over a filled host file) for the file target at depth
TEST_DISK := 128M
APT_PACKAGES := qemu-system-x86 busybox-static fio e2fsprogs xz-utils zstd cpio gcc make \
	python3 python3-venv libnbd0 nbdkit qemu-utils nbd-client systemd
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

comma := ,
# $(call banner,TEXT): make splits TEXT at its commas into more arguments; join them back.
banner = @printf '\n==== %s ====\n' "$(1)$(if $(2),$(comma)$(2))$(if $(3),$(comma)$(3))$(if $(4),$(comma)$(4))"
# pytest exits 5 when it collected nothing: a stage that tests nothing is a failure, said loudly.
pytest_stage = $(1) || { rc=$$?; [ $$rc -ne 5 ] || echo "make: $(2) collected no tests: failing" >&2; exit $$rc; }
# sid's liburing-ffi.so.2, exported for host tests and passed on into the VM by the test bed.
with_liburing = UBLK_BINDINGS_LIBURING="$${UBLK_BINDINGS_LIBURING:-$$($(PY) -m testbed liburing)}" && \
	export UBLK_BINDINGS_LIBURING &&

.NOTPARALLEL:  # the stages run in order and stop at the first failure
.PHONY: demo bench test setup apt prepare generated typecheck unit $(SUITES:%=kernel-%)

demo: setup
	$(call banner,demo: ext4 on a ublk-gadget file device through a live handover and a crash adoption (VM))
	@$(with_liburing) $(PY) -m demo

# About 20 minutes of VM time: every peer, every workload, the disk table (on a 512 MiB virtio-blk
# disk, cached under the test bed's cache), the shared-CPU table, the handover stall; see README "Benchmarks".
bench: setup
	$(call banner,bench: the gadget against null_blk, loop and kublk, on tmpfs and on a disk, in one VM boot)
	@$(with_liburing) $(PY) -m bench --publish

test: setup generated typecheck unit $(SUITES:%=kernel-%)

# --- setup: idempotent; a fresh Debian 12 machine gets everything `make test` needs ---------

setup: apt $(VENV)/.installed prepare

apt:
	$(call banner,setup: Debian packages)
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	else echo "all installed: $(APT_PACKAGES)"; fi

$(VENV)/.installed: pyproject.toml | apt
	$(call banner,setup: $(VENV) with ublk-bindings[dev,bench])
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev,bench]'
	touch $@

prepare: $(VENV)/.installed
	$(call banner,setup: test-bed kernels ($(SUITES)) and liburing)
	$(PY) -m testbed prepare $(SUITES:%=--kernel %)

# --- test stages, in order -------------------------------------------------------------------

generated: setup
	$(call banner,generated modules match their headers)
	$(VENV)/bin/ublk-bindings-gen --check ublk_bindings/ublk_cmd.py
	$(VENV)/bin/ublk-bindings-gen --check ublk_bindings/io_uring.py

# mypy cannot follow setuptools' editable-install finder, and the check is of what users
# install: so build and install the wheel into a scratch directory and check that.
typecheck: setup
	$(call banner,mypy --strict: the installed packages and the test bed)
	rm -rf build .out/typecheck
	$(PY) -m pip install -q --no-deps --target .out/typecheck .
	cd .out/typecheck && ../../$(VENV)/bin/mypy --strict --cache-dir ../mypy-cache \
		-p ublk_bindings -p ublk_bindings_codegen -p ublk_gadget
	$(VENV)/bin/mypy --strict --cache-dir .out/mypy-cache testbed examples tests/conftest.py \
		tests/kernel/test_testbed.py

unit: setup
	$(call banner,unit tests on the host)
	@$(with_liburing) $(call pytest_stage,$(PY) -m pytest -rfEs tests/unit testbed/tests,unit tests)

$(SUITES:%=kernel-%): kernel-%: setup
	$(call banner,kernel tests in the VM: Debian $*)
	@$(with_liburing) $(call pytest_stage,$(PY) -m testbed run --kernel $* --timeout $(KERNEL_TIMEOUT) \
		--disk $(TEST_DISK) -- \
		$(PY) -m pytest -rfEs -m ublk $(KERNEL_TESTS),kernel tests on $*)
