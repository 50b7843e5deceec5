"""Warm sandboxes: boot the sandbox guest once, restore a clone per run.

The first run in a process (per guest RAM size and guest binary) boots the
bundled guest with ``vmm.sandbox vmm.warm``: it sets up its console ports,
says ``ready ROOM TOP`` on the control port and waits there for its bundle.
Then the VM is paused and snapshotted once: the state file decoded and
checked (vmm.snapshot.load.CheckedSnapshot) and kept in memory, guest RAM
kept as an unlinked file that every clone maps MAP_PRIVATE (pages shared
until written). Each run restores a clone (paused), writes its bundle into
the clone's RAM page-aligned under TOP (where a PVH module would be), sends
``VMMBNDL1`` and the size (u64, little-endian) on the control port, and lets
it run (guest/lx_main.c). Nothing per run is in the snapshot: options, seed
and clock travel in the bundle, and the host adds fresh ``entropy`` to it,
since every clone starts from the same guest random state.

The snapshot is also kept on disk (image_cache.py), so a later process
(every `vmm exec`) restores clones from it without booting or snapshotting.
"""

from __future__ import annotations

import os
import threading
import time

from ..errors import ConfigError

WARM_CMDLINE = "console=ttyS0 vmm.sandbox vmm.warm"
BUNDLE_MAGIC = b"VMMBNDL2"
READY_TIMEOUT = 60.0  # seconds for the first boot to reach "ready" (a loaded host is slow)
MAX_IMAGES = 4  # snapshots kept per process (one per RAM size and guest binary in use)


def bundle_header(size: int, placed: tuple[int, int] = (0, 0)) -> bytes:
    """What the guest reads on the control port: the magic, the bundle's size and
    the span where the host wrote the program's segments (guest/lx_main.c)."""
    return BUNDLE_MAGIC + b"".join(n.to_bytes(8, "little") for n in (size, *placed))


def check_fits(size: int, room: int) -> None:
    if size > room:
        raise ConfigError(
            f"bundle of {size} bytes does not fit in the sandbox's guest RAM ({room} bytes free); "
            "give it more memory (--mem)"
        )


def place_bundle(memory, bundle, room: int, top: int) -> bytes:
    """Write ``bundle`` (bytes, or a bundle.Bundle) into the RAM of a guest that said
    ``ready ROOM TOP``, and the program's segments where its loader would put them
    (placement.py); returns the header to send on the control port."""
    from .placement import BELOW_BUNDLE, PAGE, place_program

    size = len(bundle)
    check_fits(size, room)
    start = (top - size) & ~0xFFF
    if isinstance(bundle, (bytes, bytearray, memoryview)):
        memory.view_to_fill(start, size)[:] = bundle  # bounds-checked; big ones in huge pages
        return bundle_header(size)
    offset, length = bundle.exec_member
    # Free RAM: above the guest's low allocations (ROOM says where they end),
    # below the stack it puts under the bundle.
    floor, limit = top - room - PAGE, start - BELOW_BUNDLE
    mapped = _map_program(memory, bundle, start, floor, limit)
    if mapped is not None:
        return bundle_header(size, mapped)
    bundle.write_into(memory.view_to_fill(start, size))
    placed = place_program(memory, start + offset, length, floor, limit)
    if bundle.exec_identity is not None:
        from . import program_cache

        program_cache.note_run(bundle.exec_identity, memory, start + offset, placed)
    return bundle_header(size, placed)


def _map_program(memory, bundle, start: int, floor: int, limit: int) -> tuple[int, int] | None:
    """The bundle written with its program's pages and segments mapped from the
    program's cache entry (program_cache.py); the span placed, or None (nothing
    written) when the program has no entry, or its span does not fit here."""
    from . import program_cache
    from .placement import PAGE

    offset, length = bundle.exec_member
    if bundle.exec_identity is None or offset % PAGE:
        return None
    entry = program_cache.lookup(bundle.exec_identity)
    if entry is None or entry.size != length:
        return None
    span_start, span_end = entry.span
    whole = length // PAGE * PAGE  # the tail page also holds what follows in the bundle: written
    if span_start < floor or span_end > limit \
            or not memory.map_file_over(span_start, span_end - span_start, entry.fd, entry.span_offset) \
            or (whole and not memory.map_file_over(start + offset, whole, entry.fd, entry.program_offset)):
        return None  # (a span mapped already is overwritten by place_program)
    size = len(bundle)
    for at, end in ((start, start + offset), (start + offset + whole, start + size)):
        if end > at:
            memory.view_to_fill(at, end - at)  # populated, as the rest of a bundle is
    bundle.write_into(memory.view(start, size), skip=(offset, whole))
    return entry.span


class WarmImage:
    """One snapshot of the sandbox guest waiting for its bundle."""

    def __init__(self, checked, mem_fd: int, room: int, top: int, build_ms: float, cache_key: str | None = None):
        self.checked = checked
        self.cache_key = cache_key  # restored from the disk cache (image_cache.py): its entry
        self.mem_fd = mem_fd  # guest RAM: a file (unlinked, or the disk cache's), mapped by every clone
        self.room = room  # the largest bundle the guest has room for
        self.top = top  # the bundle ends page-aligned under this guest address
        self.build_ms = build_ms
        self.clones = 0
        # The RAM file's holes (most of RAM: the guest has touched ~300 KB by
        # "ready"), mapped anonymous in each clone: a page written there (the
        # bundle, the program, its heap) then costs one fresh zeroed page, not a
        # zeroed page-cache page of the file and a copy of it.
        self.holes = file_holes(mem_fd)

    def check_fits(self, size: int) -> None:
        check_fits(size, self.room)

    def place(self, vm, bundle) -> bytes:
        """Write ``bundle`` into a clone's RAM; returns what to send on the control port."""
        return place_bundle(vm.memory, bundle, self.room, self.top)

    def clone(self, *, on_output, output, seccomp: bool | None = None):
        """A MicroVM restored from this image, its vCPUs paused (resume() runs it).

        (A spare clone restored ahead in a background thread was tried: with
        the GIL shared, back-to-back runs got no faster, 7.5 -> 8.9 ms median.)"""
        from ..machine import MicroVM

        restored = self.checked.open(os.dup(self.mem_fd), console_options={"on_output": on_output})
        restored.track_dirty = False  # a clone is never snapshotted: let KVM use huge pages
        try:
            vm = MicroVM(restored.config, prepared=restored, output=output, capture=False, seccomp=seccomp)
        except BaseException:
            restored.close()
            raise
        for hole, length in self.holes:  # best effort: where it fails, the file's zeroes stay
            for region in vm.memory.regions:
                start, end = max(hole, region.guest_addr), min(hole + length, region.end)
                if end - start >= HOLE_MIN:
                    vm.memory.map_file_over(start, end - start, -1)
        try:
            vm.start(paused=True)
        except BaseException:
            vm.close()
            raise
        self.clones += 1
        return vm

    def close(self) -> None:
        if self.mem_fd >= 0:
            os.close(self.mem_fd)  # clones keep their own descriptors and mappings
            self.mem_fd = -1


HOLE_MIN = 64 << 10  # smaller holes stay file-backed: not worth a mapping each


def file_holes(fd: int) -> list[tuple[int, int]]:
    """(offset, length) of the holes in file ``fd`` (page-aligned, at least HOLE_MIN)."""
    size = os.fstat(fd).st_size
    holes, at = [], 0
    while at < size:
        try:
            hole = os.lseek(fd, at, os.SEEK_HOLE)
        except OSError:
            break  # a file system without SEEK_HOLE: no holes known
        try:
            data = os.lseek(fd, hole, os.SEEK_DATA)
        except OSError:
            data = size  # ENXIO: a hole to the end
        start, end = -(-hole // 4096) * 4096, data // 4096 * 4096
        if end - start >= HOLE_MIN:
            holes.append((start, end - start))
        at = max(data, hole + 1)
    return holes


def guest_identity(path: str) -> tuple:
    """What a snapshot of the guest depends on: a rebuilt guest gets a new one."""
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class WarmPool:
    """Snapshots by (mem_mib, guest identity), built lazily, safe to use from many threads:
    the first caller for a key builds it while the others for that key wait."""

    def __init__(self, max_images: int = MAX_IMAGES):
        self._lock = threading.Lock()
        self._images: dict[tuple, WarmImage] = {}
        self._building: dict[tuple, threading.Lock] = {}
        self._max = max_images

    def image(self, mem_mib: int, kernel: str) -> WarmImage:
        key = (mem_mib, guest_identity(kernel))
        with self._lock:
            image = self._images.get(key)
            if image is not None:
                return image
            build_lock = self._building.setdefault(key, threading.Lock())
        with build_lock:
            with self._lock:
                image = self._images.get(key)
            if image is None:
                image = cached_image(mem_mib, kernel) or build_image(mem_mib, kernel)
                with self._lock:
                    self._images[key] = image
                    self._building.pop(key, None)
                    while len(self._images) > self._max:
                        oldest = next(iter(self._images))
                        self._images.pop(oldest).close()
            return image

    def discard(self, image: WarmImage) -> None:
        """Drop ``image`` (it failed to restore here), and its entry on disk."""
        with self._lock:
            for key, kept in list(self._images.items()):
                if kept is image:
                    del self._images[key]
        if image.cache_key is not None:
            from . import image_cache

            image_cache.forget(image.cache_key)
        image.close()

    def clear(self) -> None:
        with self._lock:
            for image in self._images.values():
                image.close()
            self._images.clear()


_pool = WarmPool()


def pool() -> WarmPool:
    """This process's pool (vmm.sandbox.run uses it unless warm=False)."""
    return _pool


def _cache_key(mem_mib: int, kernel: str) -> str | None:
    from . import image_cache
    from .runner import PORTS

    return image_cache.entry_key(mem_mib, guest_identity(kernel), WARM_CMDLINE, PORTS)


def cached_image(mem_mib: int, kernel: str) -> WarmImage | None:
    """The image another process built and kept on disk (image_cache.py), checked
    as any snapshot is; None when there is none (or it does not pass)."""
    from ..snapshot.load import check_snapshot
    from ..snapshot.records import SnapshotError, check_plain
    from . import image_cache

    started = time.monotonic()
    key = _cache_key(mem_mib, kernel)
    found = image_cache.load(key, mem_mib << 20) if key is not None else None
    if found is None:
        return None
    header, body, room, top, mem_fd = found
    what = "the cached sandbox snapshot"
    try:
        if not 0 < room < top <= mem_mib << 20:
            raise SnapshotError(f"{what}: bundle room {room} and top 0x{top:x} do not fit {mem_mib} MiB")
        check_plain(header, body, what)
        if [str(slot.kind) for slot in body.virtio] != ["console"]:
            raise SnapshotError(f"{what}: not the sandbox's one console")  # (never a disk to open)
        checked = check_snapshot(header, body, what)
    except (SnapshotError, AttributeError, KeyError, TypeError, ValueError):
        os.close(mem_fd)
        image_cache.forget(key)
        return None
    return WarmImage(checked, mem_fd, room, top, (time.monotonic() - started) * 1000, cache_key=key)


def build_image(mem_mib: int, kernel: str) -> WarmImage:
    """Boot the guest to "ready", snapshot it, and keep the snapshot (here, and
    on disk for later processes where the cache can be written)."""
    import shutil
    import tempfile

    from . import image_cache

    from ..config import VmConfig
    from ..devices.virtio.console import VirtioConsole
    from ..machine import MicroVM
    from ..snapshot import format as fmt
    from ..snapshot.load import check_snapshot
    from ..snapshot.save import snapshot
    from .control import ControlParser
    from .runner import CONTROL, PORTS, SandboxError

    started = time.monotonic()
    parser, events, ready = ControlParser(), [], threading.Event()
    log = bytearray()

    def on_output(port: int, data: bytes) -> None:
        if port == CONTROL:
            events.extend(parser.feed(data))
            ready.set()

    def on_serial(data: bytes) -> None:
        if len(log) < 4096:
            log.extend(data[: 4096 - len(log)])

    console = VirtioConsole(PORTS, on_output=on_output)
    config = VmConfig(kernel=kernel, mem_mib=mem_mib, cmdline=WARM_CMDLINE)
    workdir = image_cache.build_directory() or tempfile.mkdtemp(prefix="vmm-warm-")
    try:
        state_path, mem_path = os.path.join(workdir, "state"), os.path.join(workdir, "mem")
        with MicroVM(config, output=on_serial, capture=False, virtio_devices=[console]) as vm:  # started
            deadline = time.monotonic() + READY_TIMEOUT
            while not any(e[0] == "ready" for e in events):
                if vm.is_finished() or time.monotonic() > deadline or any(e[0] == "error" for e in events):
                    tail = log.decode(errors="replace").strip().splitlines()[-1:] or ["(nothing)"]
                    raise SandboxError(f"the warm sandbox guest did not get ready ({events[-1:] or vm.outcome}); guest log ends: {tail[0]!r}")
                ready.wait(0.05)
                ready.clear()
            room, top = next(e[1:] for e in events if e[0] == "ready")
            if top > mem_mib << 20:
                raise SandboxError(f"the warm sandbox guest gave a bundle address 0x{top:x} beyond its RAM")
            vm.pause()
            snapshot(vm, state_path, mem_path)
        with open(state_path, "rb") as f:
            data = f.read()
        what = "the warm sandbox snapshot"
        header, body = fmt.decode(data, what)
        checked = check_snapshot(header, body, what)
        mem_fd = os.open(mem_path, os.O_RDONLY | os.O_CLOEXEC)
        key = _cache_key(mem_mib, kernel)
        if key is not None:
            image_cache.keep(workdir, key, header, body, room, top)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the memory file lives on through mem_fd
    return WarmImage(checked, mem_fd, room, top, (time.monotonic() - started) * 1000)
