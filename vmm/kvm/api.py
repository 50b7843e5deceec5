"""Thin typed wrappers around the /dev/kvm, VM and vCPU file descriptors.

The only module that issues ioctls. Policy (which CPUID bits, which MSRs,
which registers at entry) lives in vmm.x86; this layer just moves structures
in and out and turns a failing ioctl into a KvmError naming it and the errno.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading

from ..errors import KvmError, KvmUnavailableError
from ._kvm_cffi import ffi, lib

KVM_DEVICE = "/dev/kvm"
# What a KVM device reports of the host (capabilities, supported CPUID, MSR
# list) does not change while a process runs: asked once per device path, not
# once per VM (KVM_GET_SUPPORTED_CPUID alone costs ~0.3 ms here).
_HOST_FACTS: dict[str, dict] = {}
# The signal that kicks a vCPU thread out of KVM_RUN (Firecracker uses SIGRTMIN too).
KICK_SIGNAL = lib.vmm_kick_signal()
_AHEAD_CPUID_ENTRIES = 512  # as VMM_AHEAD_CPUID_ENTRIES in ffi_build.py
_ahead_path: str | None = None  # the device start_ahead opens on its thread, until taken
_ahead_lock = threading.Lock()


def start_ahead(path: str = KVM_DEVICE) -> None:
    """Open ``path``, ask its supported CPUID and create a VM on a thread of
    their own (~0.5 ms here, no GIL held) while the caller goes on with other
    work (`vmm exec`: its imports); the next ``Kvm(path)`` takes them, its
    first create_vm() the VM. Whatever fails there is done again, and
    reported, by Kvm as without this."""
    global _ahead_path
    with _ahead_lock:
        if _ahead_path is None and lib.vmm_kvm_ahead_start(os.fsencode(path)) == 0:
            _ahead_path = path


def _take_ahead(path: str):
    """(system fd, VM fd, supported CPUID or None) that start_ahead made for
    ``path`` (fds -1 where it did not get them), or None."""
    global _ahead_path
    with _ahead_lock:
        if _ahead_path != path:
            return None
        _ahead_path = None
        kvm_fd, vm_fd = ffi.new("int *"), ffi.new("int *")
        cpuid = ffi.new("struct kvm_cpuid2 *", {"nent": _AHEAD_CPUID_ENTRIES, "entries": _AHEAD_CPUID_ENTRIES})
        if lib.vmm_kvm_ahead_finish(kvm_fd, vm_fd, cpuid) != 0:
            return None
    return kvm_fd[0], vm_fd[0], (_cpuid_entries(cpuid) if cpuid.nent else None)


def _cpuid_entries(cpuid) -> list[tuple[int, int, int, int, int, int, int]]:
    return [(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx) for e in cpuid.entries[0 : cpuid.nent]]


def _check(name: str, result: int, detail: str = "") -> int:
    if result < 0:
        raise KvmError(name, -result, detail)
    return result


class Kvm:
    """The system file descriptor: capabilities and host-wide queries."""

    def __init__(self, path: str = KVM_DEVICE):
        self._host_facts = _HOST_FACTS.setdefault(path, {})
        self._vm_made_ahead = -1
        ahead = _take_ahead(path)
        if ahead is not None and ahead[0] >= 0:  # (the thread checked the API version)
            self.fd, self._vm_made_ahead, cpuid = ahead
            if cpuid is not None:
                self._host_facts.setdefault("cpuid", tuple(cpuid))
            self.vcpu_mmap_size = _check(
                "KVM_GET_VCPU_MMAP_SIZE", lib.vmm_ioctl_value(self.fd, lib.KVM_GET_VCPU_MMAP_SIZE, 0)
            )
            return
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KvmUnavailableError(
                f"{path} does not exist: KVM is not available on this host"
            ) from None
        except PermissionError:
            raise KvmUnavailableError(
                f"no permission to open {path} (add yourself to the 'kvm' group)"
            ) from None
        except OSError as err:
            raise KvmUnavailableError(f"cannot open {path}: {err.strerror}") from None
        version = _check("KVM_GET_API_VERSION", lib.vmm_ioctl_value(self.fd, lib.KVM_GET_API_VERSION, 0))
        if version != lib.KVM_API_VERSION:
            os.close(self.fd)
            raise KvmUnavailableError(f"unsupported KVM API version {version}")
        self.vcpu_mmap_size = _check(
            "KVM_GET_VCPU_MMAP_SIZE", lib.vmm_ioctl_value(self.fd, lib.KVM_GET_VCPU_MMAP_SIZE, 0)
        )

    def check_extension(self, cap: int) -> int:
        key = ("cap", cap)
        if key not in self._host_facts:
            self._host_facts[key] = max(0, lib.vmm_ioctl_value(self.fd, lib.KVM_CHECK_EXTENSION, cap))
        return self._host_facts[key]

    def supported_cpuid(self) -> list[tuple[int, int, int, int, int, int, int]]:
        """Entries as (function, index, flags, eax, ebx, ecx, edx)."""
        if "cpuid" not in self._host_facts:
            self._host_facts["cpuid"] = tuple(self._query_supported_cpuid())
        return list(self._host_facts["cpuid"])

    def _query_supported_cpuid(self) -> list[tuple[int, int, int, int, int, int, int]]:
        count = 128
        while True:
            cpuid = ffi.new("struct kvm_cpuid2 *", {"nent": count, "entries": count})
            result = lib.vmm_ioctl(self.fd, lib.KVM_GET_SUPPORTED_CPUID, cpuid)
            if result == -errno.E2BIG and count < 4096:
                count *= 2
                continue
            _check("KVM_GET_SUPPORTED_CPUID", result)
            return _cpuid_entries(cpuid)

    def msr_index_list(self) -> list[int]:
        if "msrs" not in self._host_facts:
            self._host_facts["msrs"] = tuple(self._query_msr_index_list())
        return list(self._host_facts["msrs"])

    def _query_msr_index_list(self) -> list[int]:
        probe = ffi.new("struct kvm_msr_list *", {"nmsrs": 0, "indices": 0})
        lib.vmm_ioctl(self.fd, lib.KVM_GET_MSR_INDEX_LIST, probe)  # E2BIG, sets nmsrs
        count = probe.nmsrs
        msrs = ffi.new("struct kvm_msr_list *", {"nmsrs": count, "indices": count})
        _check("KVM_GET_MSR_INDEX_LIST", lib.vmm_ioctl(self.fd, lib.KVM_GET_MSR_INDEX_LIST, msrs))
        return list(msrs.indices[0 : msrs.nmsrs])

    def create_vm(self) -> "Vm":
        fd, self._vm_made_ahead = self._vm_made_ahead, -1
        if fd < 0:
            fd = _check("KVM_CREATE_VM", lib.vmm_ioctl_value(self.fd, lib.KVM_CREATE_VM, 0))
        return Vm(self, fd)

    def close(self) -> None:
        if self._vm_made_ahead >= 0:
            os.close(self._vm_made_ahead)
            self._vm_made_ahead = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Vm:
    """A VM file descriptor: memory slots, interrupt controller, vCPUs."""

    def __init__(self, kvm: Kvm, fd: int):
        self.kvm = kvm
        self.fd = fd
        self._next_slot = 0
        self.memory_slots: list = []  # struct kvm_userspace_memory_region, by slot

    def add_memory(self, guest_addr: int, mapping, flags: int = 0) -> None:
        """Back guest_addr.. with ``mapping`` (an mmap, which must outlive the VM);
        ``flags``: KVM_MEM_* (KVM_MEM_LOG_DIRTY_PAGES for snapshots)."""
        size = len(mapping)
        host_addr = int(ffi.cast("uintptr_t", ffi.from_buffer(mapping)))
        region = ffi.new(
            "struct kvm_userspace_memory_region *",
            {
                "slot": self._next_slot,
                "flags": flags,
                "guest_phys_addr": guest_addr,
                "memory_size": size,
                "userspace_addr": host_addr,
            },
        )
        _check(
            "KVM_SET_USER_MEMORY_REGION",
            lib.vmm_ioctl(self.fd, lib.KVM_SET_USER_MEMORY_REGION, region),
            f"slot {self._next_slot} at 0x{guest_addr:x}+0x{size:x}",
        )
        self.memory_slots.append(region)  # kept for set_dirty_logging
        self._next_slot += 1

    def set_tss_addr(self, addr: int) -> None:
        _check("KVM_SET_TSS_ADDR", lib.vmm_ioctl_value(self.fd, lib.KVM_SET_TSS_ADDR, addr))

    def create_irqchip(self) -> None:
        _check("KVM_CREATE_IRQCHIP", lib.vmm_ioctl_value(self.fd, lib.KVM_CREATE_IRQCHIP, 0))

    def set_irq_line(self, irq: int, level: bool) -> None:
        line = ffi.new("struct kvm_irq_level *", {"irq": irq, "level": int(level)})
        _check("KVM_IRQ_LINE", lib.vmm_ioctl(self.fd, lib.KVM_IRQ_LINE, line), f"irq {irq}")

    def add_irqfd(self, eventfd: int, gsi: int) -> None:
        irqfd = ffi.new("struct kvm_irqfd *", {"fd": eventfd, "gsi": gsi, "flags": 0})
        _check("KVM_IRQFD", lib.vmm_ioctl(self.fd, lib.KVM_IRQFD, irqfd), f"gsi {gsi}")

    def add_ioeventfd(
        self, eventfd: int, addr: int, length: int, *, datamatch: int | None = None, pio: bool = False, remove: bool = False
    ) -> None:
        """Register (or, with ``remove``, unregister the same) ioeventfd. Either
        costs KVM a synchronize_srcu: milliseconds here."""
        flags = lib.KVM_IOEVENTFD_FLAG_PIO if pio else 0
        if datamatch is not None:
            flags |= lib.KVM_IOEVENTFD_FLAG_DATAMATCH
        if remove:
            flags |= lib.KVM_IOEVENTFD_FLAG_DEASSIGN
        ioeventfd = ffi.new(
            "struct kvm_ioeventfd *",
            {"addr": addr, "len": length, "fd": eventfd, "flags": flags, "datamatch": datamatch or 0},
        )
        _check("KVM_IOEVENTFD", lib.vmm_ioctl(self.fd, lib.KVM_IOEVENTFD, ioeventfd), f"at 0x{addr:x}")

    # ---- snapshots (vmm/persist): irqchip, PIT, clock, dirty log ----------------
    def set_dirty_logging(self, enabled: bool) -> None:
        """Turn KVM_MEM_LOG_DIRTY_PAGES on or off for every memory slot."""
        for region in self.memory_slots:
            region.flags = lib.KVM_MEM_LOG_DIRTY_PAGES if enabled else 0
            _check("KVM_SET_USER_MEMORY_REGION", lib.vmm_ioctl(self.fd, lib.KVM_SET_USER_MEMORY_REGION, region),
                   f"slot {region.slot} dirty logging {'on' if enabled else 'off'}")

    def dirty_log(self, slot: int) -> bytes:
        """The slot's dirty bitmap (one bit per 4 KiB page, bit i of byte i//8),
        cleared by KVM as it is read."""
        region = self.memory_slots[slot]
        pages = region.memory_size >> 12
        bitmap = ffi.new("uint64_t[]", max(1, (pages + 63) // 64))
        log = ffi.new("struct kvm_dirty_log *")
        log.slot, log.dirty_bitmap = slot, bitmap
        _check("KVM_GET_DIRTY_LOG", lib.vmm_ioctl(self.fd, lib.KVM_GET_DIRTY_LOG, log), f"slot {slot}")
        return bytes(ffi.buffer(bitmap))[: (pages + 7) // 8]

    def get_irqchip(self, chip_id: int) -> bytes:
        chip = ffi.new("struct kvm_irqchip *")
        chip.chip_id = chip_id
        _check("KVM_GET_IRQCHIP", lib.vmm_ioctl(self.fd, lib.KVM_GET_IRQCHIP, chip), f"chip {chip_id}")
        return bytes(ffi.buffer(chip))

    def set_irqchip(self, chip_id: int, blob: bytes) -> None:
        chip = _from_blob("struct kvm_irqchip *", blob)
        if chip.chip_id != chip_id:
            raise KvmError("KVM_SET_IRQCHIP", errno.EINVAL, f"record is for chip {chip.chip_id}, not {chip_id}")
        _check("KVM_SET_IRQCHIP", lib.vmm_ioctl(self.fd, lib.KVM_SET_IRQCHIP, chip), f"chip {chip_id}")

    def get_pit2(self) -> bytes:
        return _get_blob(self.fd, "KVM_GET_PIT2", "struct kvm_pit_state2 *")

    def set_pit2(self, blob: bytes) -> None:
        _set_blob(self.fd, "KVM_SET_PIT2", "struct kvm_pit_state2 *", blob)

    def get_clock(self) -> int:
        data = ffi.new("struct kvm_clock_data *")
        _check("KVM_GET_CLOCK", lib.vmm_ioctl(self.fd, lib.KVM_GET_CLOCK, data))
        return data.clock

    def set_clock(self, clock: int) -> None:
        data = ffi.new("struct kvm_clock_data *")
        data.clock = clock  # flags 0: the clock as given, no realtime adjustment
        _check("KVM_SET_CLOCK", lib.vmm_ioctl(self.fd, lib.KVM_SET_CLOCK, data))
    # ---- end of snapshots -----------------------------------------------------------

    def create_vcpu(self, index: int) -> "Vcpu":
        fd = _check("KVM_CREATE_VCPU", lib.vmm_ioctl_value(self.fd, lib.KVM_CREATE_VCPU, index))
        return Vcpu(self, fd, index)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Vcpu:
    """A vCPU: its registers, CPUID, MSRs, FPU, and KVM_RUN."""

    def __init__(self, vm: Vm, fd: int, index: int):
        self.vm = vm
        self.fd = fd
        self.index = index
        self._run_map = mmap.mmap(fd, vm.kvm.vcpu_mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.run_struct = ffi.cast("struct kvm_run *", ffi.from_buffer(self._run_map))
        self.exit = ffi.new("struct vmm_exit *")
        self._fast = ffi.new("struct vmm_fastpath *")
        self._fast.tx_fds[0] = self._fast.tx_fds[1] = -1

    # --- registers -------------------------------------------------------
    def get_regs(self):
        regs = ffi.new("struct kvm_regs *")
        _check("KVM_GET_REGS", lib.vmm_ioctl(self.fd, lib.KVM_GET_REGS, regs))
        return regs

    def set_regs(self, regs) -> None:
        _check("KVM_SET_REGS", lib.vmm_ioctl(self.fd, lib.KVM_SET_REGS, regs))

    def get_sregs(self):
        sregs = ffi.new("struct kvm_sregs *")
        _check("KVM_GET_SREGS", lib.vmm_ioctl(self.fd, lib.KVM_GET_SREGS, sregs))
        return sregs

    def set_sregs(self, sregs) -> None:
        _check("KVM_SET_SREGS", lib.vmm_ioctl(self.fd, lib.KVM_SET_SREGS, sregs))

    def set_cpuid(self, entries: list[tuple[int, int, int, int, int, int, int]]) -> None:
        cpuid = ffi.new("struct kvm_cpuid2 *", {"nent": len(entries), "entries": len(entries)})
        for slot, (function, index, flags, eax, ebx, ecx, edx) in zip(cpuid.entries, entries):
            slot.function, slot.index, slot.flags = function, index, flags
            slot.eax, slot.ebx, slot.ecx, slot.edx = eax, ebx, ecx, edx
        _check("KVM_SET_CPUID2", lib.vmm_ioctl(self.fd, lib.KVM_SET_CPUID2, cpuid))

    def set_msrs(self, msrs: dict[int, int]) -> None:
        table = ffi.new("struct kvm_msrs *", {"nmsrs": len(msrs), "entries": len(msrs)})
        for slot, (index, value) in zip(table.entries, msrs.items()):
            slot.index, slot.data = index, value
        done = _check("KVM_SET_MSRS", lib.vmm_ioctl(self.fd, lib.KVM_SET_MSRS, table))
        if done != len(msrs):
            failed = list(msrs)[done]
            raise KvmError("KVM_SET_MSRS", errno.EINVAL, f"MSR 0x{failed:x} refused")

    def set_fpu(self, fcw: int, mxcsr: int) -> None:
        fpu = ffi.new("struct kvm_fpu *")
        fpu.fcw, fpu.mxcsr = fcw, mxcsr
        _check("KVM_SET_FPU", lib.vmm_ioctl(self.fd, lib.KVM_SET_FPU, fpu))

    # MXCSR through the XSAVE image: on this platform KVM_GET_FPU reports 0 and
    # KVM_SET_FPU does not take (the SSE bit of XSTATE_BV stays clear, so the
    # kernel keeps the default); the legacy area's MXCSR at byte 24 does.
    XSAVE_MXCSR, XSAVE_XSTATE_BV, XFEATURE_SSE = 6, 128, 1 << 1  # in 32-bit words; the SSE bit

    def get_mxcsr(self) -> int:
        xsave = ffi.new("struct kvm_xsave *")
        _check("KVM_GET_XSAVE", lib.vmm_ioctl(self.fd, lib.KVM_GET_XSAVE, xsave))
        return xsave.region[self.XSAVE_MXCSR]

    def set_mxcsr(self, value: int) -> None:
        xsave = ffi.new("struct kvm_xsave *")
        _check("KVM_GET_XSAVE", lib.vmm_ioctl(self.fd, lib.KVM_GET_XSAVE, xsave))
        xsave.region[self.XSAVE_MXCSR] = value
        xsave.region[self.XSAVE_XSTATE_BV] |= self.XFEATURE_SSE
        _check("KVM_SET_XSAVE", lib.vmm_ioctl(self.fd, lib.KVM_SET_XSAVE, xsave))

    def queue_exception(self, vector: int, error_code: int | None = None) -> None:
        """Deliver exception ``vector`` at the next KVM_RUN (KVM_SET_VCPU_EVENTS)."""
        event = ffi.new("struct vmm_exception_event *")
        event.injected, event.nr = 1, vector
        event.has_error_code, event.error_code = int(error_code is not None), error_code or 0
        _check("KVM_SET_VCPU_EVENTS", lib.vmm_queue_exception(self.fd, event), f"vector {vector}")

    def set_guest_debug(self, control: int, debugreg: list[int] | None = None) -> None:
        debug = ffi.new("struct kvm_guest_debug *")
        debug.control = control
        for i, value in enumerate((debugreg or [])[:8]):
            debug.arch.debugreg[i] = value
        _check("KVM_SET_GUEST_DEBUG", lib.vmm_ioctl(self.fd, lib.KVM_SET_GUEST_DEBUG, debug))

    def emulation_failure_bytes(self) -> bytes | None:
        """The instruction bytes of a KVM_INTERNAL_ERROR_EMULATION exit, if it carries them."""
        buf, flags = ffi.new("uint8_t[16]"), ffi.new("uint64_t *")
        count = lib.vmm_emulation_failure(self.run_struct, buf, flags)
        return None if count < 0 else bytes(ffi.buffer(buf, count))

    def debug_exit(self) -> tuple[int, int, int, int]:
        """A KVM_EXIT_DEBUG exit's (exception, pc, dr6, dr7)."""
        out = ffi.new("uint64_t[4]")
        lib.vmm_debug_exit(self.run_struct, out)
        return out[0], out[1], out[2], out[3]

    def set_xcr0(self, value: int) -> None:
        xcrs = ffi.new("struct kvm_xcrs *")
        xcrs.nr_xcrs = 1
        xcrs.xcrs[0].xcr, xcrs.xcrs[0].value = 0, value
        _check("KVM_SET_XCRS", lib.vmm_ioctl(self.fd, lib.KVM_SET_XCRS, xcrs))

    def tsc_khz(self) -> int:
        return max(0, lib.vmm_ioctl_value(self.fd, lib.KVM_GET_TSC_KHZ, 0))

    # ---- snapshots (vmm/persist): whole-structure state, saved as bytes ----------
    # KVM checks each structure on KVM_SET_*; persist.py checks sizes and the
    # fields it interprets before that.
    STATE_STRUCTS = {
        "regs": ("struct kvm_regs *", "KVM_GET_REGS", "KVM_SET_REGS"),
        "sregs": ("struct kvm_sregs *", "KVM_GET_SREGS", "KVM_SET_SREGS"),
        "fpu": ("struct kvm_fpu *", "KVM_GET_FPU", "KVM_SET_FPU"),
        "xsave": ("struct kvm_xsave *", "KVM_GET_XSAVE", "KVM_SET_XSAVE"),
        "xcrs": ("struct kvm_xcrs *", "KVM_GET_XCRS", "KVM_SET_XCRS"),
        "lapic": ("struct kvm_lapic_state *", "KVM_GET_LAPIC", "KVM_SET_LAPIC"),
        "mp_state": ("struct kvm_mp_state *", "KVM_GET_MP_STATE", "KVM_SET_MP_STATE"),
        "debugregs": ("struct kvm_debugregs *", "KVM_GET_DEBUGREGS", "KVM_SET_DEBUGREGS"),
        "vcpu_events": ("struct kvm_vcpu_events *", "KVM_GET_VCPU_EVENTS", "KVM_SET_VCPU_EVENTS"),
    }

    @staticmethod
    def state_size(name: str) -> int:
        return ffi.sizeof(Vcpu.STATE_STRUCTS[name][0][:-2])

    def get_state(self, name: str) -> bytes:
        ctype, get, _ = self.STATE_STRUCTS[name]
        return _get_blob(self.fd, get, ctype)

    def set_state(self, name: str, blob: bytes) -> None:
        ctype, _, set_ = self.STATE_STRUCTS[name]
        _set_blob(self.fd, set_, ctype, blob)

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        """The MSRs of ``indices`` this vCPU can read (KVM stops at the first it
        cannot: that one is dropped and the rest read again)."""
        result: dict[int, int] = {}
        pending = list(indices)
        while pending:
            table = ffi.new("struct kvm_msrs *", {"nmsrs": len(pending), "entries": len(pending)})
            for slot, index in zip(table.entries, pending):
                slot.index = index
            done = _check("KVM_GET_MSRS", lib.vmm_ioctl(self.fd, lib.KVM_GET_MSRS, table))
            for i in range(done):
                result[table.entries[i].index] = table.entries[i].data
            pending = pending[done + 1 :]
        return result
    # ---- end of snapshots -----------------------------------------------------------

    # --- running ---------------------------------------------------------
    def run(self) -> int:
        """KVM_RUN until an exit Python must see; returns 0, or -errno (EINTR after a kick).

        The decoded exit is in self.exit; ``self.exit.absorbed`` counts the
        port writes C handled on the way (ignored ports, UART output).
        """
        return lib.vmm_run(self.fd, self.run_struct, self.exit, self._fast)

    def ignore_port_writes(self, port: int) -> None:
        """Writes to ``port`` are dropped without leaving C (its device ignores them)."""
        self._fast.ignored_ports[port >> 3] |= 1 << (port & 7)

    def transmit_in_c(self, port: int, fds: list[int]) -> None:
        """Byte writes to ``port`` go straight to ``fds`` while enabled (see enable_transmit)."""
        self._fast.tx_port = port
        for i, fd in enumerate((fds + [-1, -1])[:2]):
            self._fast.tx_fds[i] = fd

    def enable_transmit(self, enabled: bool) -> None:
        self._fast.tx_enabled = int(enabled)

    def complete_read(self, value: int) -> None:
        lib.vmm_complete_read(self.run_struct, value)

    def io_data(self, length: int) -> memoryview:
        """The kvm_run data area of a string PIO exit (count > 1)."""
        offset = lib.vmm_io_data_offset(self.run_struct)
        if offset + length > len(self._run_map):
            raise KvmError("KVM_RUN", errno.EINVAL, "PIO data outside the kvm_run area")
        return memoryview(self._run_map)[offset : offset + length]

    def set_immediate_exit(self, value: bool) -> None:
        self.run_struct.immediate_exit = int(value)

    def close(self) -> None:
        self.run_struct = None
        if self.fd >= 0:
            try:
                self._run_map.close()
            except BufferError:
                pass  # a view is still alive; the mapping goes with the process
            os.close(self.fd)
            self.fd = -1


# ---- snapshots: structures moved as bytes -------------------------------------------
def _get_blob(fd: int, request: str, ctype: str) -> bytes:
    data = ffi.new(ctype)
    _check(request, lib.vmm_ioctl(fd, getattr(lib, request), data))
    return bytes(ffi.buffer(data))


def _from_blob(ctype: str, blob: bytes):
    data = ffi.new(ctype)
    if len(blob) != ffi.sizeof(data[0]):
        raise KvmError(ctype, errno.EINVAL, f"record of {len(blob)} bytes, expected {ffi.sizeof(data[0])}")
    ffi.buffer(data)[:] = blob
    return data


def _set_blob(fd: int, request: str, ctype: str, blob: bytes) -> None:
    _check(request, lib.vmm_ioctl(fd, getattr(lib, request), _from_blob(ctype, blob)))


def resident_pages(mapping, length: int) -> bytes:
    """One byte per page of ``mapping``'s first ``length`` bytes, bit 0 set
    where the page is resident (mincore(2)): pages never touched are not."""
    pages = (length + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = ffi.new("unsigned char[]", max(1, pages))
    _check("mincore", lib.vmm_mincore(ffi.from_buffer(mapping), length, vec))
    return bytes(ffi.buffer(vec))[:pages]
# ---- end of snapshots -----------------------------------------------------------------


def install_kick_handler() -> None:
    _check("sigaction", lib.vmm_install_kick_handler(KICK_SIGNAL))


def kick_thread(ident: int) -> None:
    """Send KICK_SIGNAL to the thread ``ident`` (threading's ident); nothing if it has ended."""
    err = lib.vmm_kick_thread(ident)
    if err and err != errno.ESRCH:
        raise OSError(err, f"pthread_kill: {os.strerror(err)}")
