"""Write the seed corpus: ``python -m tests.fuzz.seeds [NAME...]`` (tests/fuzz/corpus/<name>/seed-*).

Small, meaningful inputs each target starts from: a driver's full handshake
and a well-formed request, real kernel headers cut to size, a booted
snapshot, valid API requests. Re-running it rewrites the seeds only; the
entries the fuzzer found (and minimised) stay.
"""

from __future__ import annotations

import os
import struct
import sys

from . import TARGETS

HERE = os.path.dirname(os.path.abspath(__file__))
NEXT, WRITE, INDIRECT = 1, 2, 4


def desc(addr: int, length: int, flags: int = 0, nxt: int = 0) -> bytes:
    return struct.pack("<QIHH", addr, length, flags, nxt)


def ram_with(size: int, placements: dict[int, bytes]) -> bytes:
    image = bytearray(size)
    for addr, data in placements.items():
        image[addr : addr + len(data)] = data
    return bytes(image).rstrip(b"\0")


def split_queue(base: int, size: int, chains: list[bytes], heads: list[int]) -> dict[int, bytes]:
    """Descriptor table (``chains`` concatenated descriptors) and avail ring at ``base``."""
    avail = base + 16 * size
    ring = struct.pack("<HH", 0, len(heads)) + b"".join(struct.pack("<H", h) for h in heads)
    return {base: b"".join(chains), avail: ring}


def mmio_seeds() -> dict[str, bytes]:
    from .fuzz_mmio import QUEUE_BASE

    handshake = bytes([5]) + b"\xff" * 8 + bytes([3, 2])  # all features; queue sizes 8 and 4
    notify = bytes([3, 0])
    roundtrip = bytes([6])
    read_status = bytes([2]) + struct.pack("<H", 0x70) + bytes([0])
    script = handshake + notify + roundtrip + read_status + notify
    n_ops = -(-len(script) // 11)
    script = script.ljust(n_ops * 11, b"\x02")
    ram = ram_with(0x4000, {
        **split_queue(QUEUE_BASE, 8, [desc(0x1200, 16, NEXT, 1), desc(0x1300, 1, WRITE)], [0]),
        0x1200: struct.pack("<IIQ", 0, 0, 0),
    })
    return {"handshake-notify": bytes([n_ops]) + script + ram}


def queue_seeds() -> dict[str, bytes]:
    size = 16
    config = bytes([4, 5, 3]) + struct.pack("<H", 0xFFFE) + bytes([0, 0, 0])
    script = bytes([1, 0, 1, 2, 3, 0, 3, 0, 0, 4, 0, 0, 0, 0, 0, 5, 9, 0])
    chains = [
        desc(0x200, 16, NEXT, 1), desc(0x300, 512, NEXT | WRITE, 2), desc(0x600, 1, WRITE),
        desc(0x700, 48, INDIRECT),
    ]
    table = desc(0x200, 16, NEXT, 1) + desc(0x300, 512, NEXT | WRITE, 2) + desc(0x600, 1, WRITE)
    ram = ram_with(0x8000, {**split_queue(0, size, chains, [0, 3]), 0x700: table})
    # avail.idx free-running from first_index 0xFFFE: two entries published -> 0x0000
    ram = bytearray(ram)
    ram[16 * size + 2 : 16 * size + 4] = struct.pack("<H", 0)
    ring = 16 * size + 4
    ram[ring + 2 * 14 : ring + 2 * 16] = struct.pack("<HH", 0, 3)
    return {"direct-and-indirect": config + bytes([len(script) // 3]) + script + bytes(ram)}


def block_seeds() -> dict[str, bytes]:
    size = 16
    hdr = lambda kind, sector: struct.pack("<IIQ", kind, 0, sector)  # noqa: E731
    chains = [
        desc(0x200, 16, NEXT, 1), desc(0x300, 512, NEXT | WRITE, 2), desc(0x600, 1, WRITE),  # read sector 2
        desc(0x210, 16, NEXT, 4), desc(0x800, 1024, NEXT, 5), desc(0x601, 1, WRITE),  # write sectors 3-4
        desc(0x220, 16, NEXT, 7), desc(0x602, 1, WRITE),  # flush
        desc(0x230, 16, NEXT, 9), desc(0x640, 20, NEXT | WRITE, 10), desc(0x603, 1, WRITE),  # get id
        desc(0x700, 48, INDIRECT),  # read sector 0 through an indirect table
    ]
    table = desc(0x240, 16, NEXT, 1) + desc(0xC00, 512, NEXT | WRITE, 2) + desc(0x604, 1, WRITE)
    ram = ram_with(0x8000, {
        **split_queue(0, size, chains, [0, 3, 6, 8, 11]),
        0x200: hdr(0, 2) + hdr(1, 3) + hdr(4, 0) + hdr(8, 0) + hdr(0, 0),
        0x700: table, 0x800: b"written by the guest" * 51,
    })
    script = bytes([0, 0, 0])
    return {
        "requests-rw": bytes([0, 0, 1]) + script + ram,
        "requests-ro-model": bytes([3, 0, 1]) + script + ram,
        "compared-rw": bytes([0x10, 0, 1]) + script + ram,  # C fast path against the model
        "compared-ro-model": bytes([0x13, 0, 1]) + script + ram,
    }


def console_seeds() -> dict[str, bytes]:
    from .fuzz_console import QUEUE_SIZE, QUEUE_STRIDE

    msg = lambda port, event, value: struct.pack("<IHH", port, event, value)  # noqa: E731
    places = {}

    def queue(index, chains, heads):
        places.update(split_queue(index * QUEUE_STRIDE, QUEUE_SIZE, chains, heads))

    # control transmit (3): DEVICE_READY, PORT_READY 1 and 2, PORT_OPEN 2
    queue(3, [desc(0x900 + 8 * i, 8) for i in range(4)], [0, 1, 2, 3])
    places[0x900] = msg(0, 0, 1) + msg(1, 3, 1) + msg(2, 3, 1) + msg(2, 6, 1)
    # control receive (2): four 16-byte buffers
    queue(2, [desc(0xA00 + 16 * i, 16, WRITE) for i in range(4)], [0, 1, 2, 3])
    # port 2 receive (6): one 64-byte buffer; port 1 transmit (5): "hello"
    queue(6, [desc(0xB00, 64, WRITE)], [0])
    queue(5, [desc(0xC00, 6)], [0])
    places[0xC00] = b"hello\n"
    ops = [(0, 3), (0, 2), (3, 50), (0, 6), (0, 5), (8, 0), (4, 0x104), (0, 2)]
    script = b"".join(struct.pack("<BH", op, arg) for op, arg in ops)
    return {"multiport-handshake": bytes([0, 1, 0, len(ops)]) + script + ram_with(0x4000, places)}


def compact_elf(data: bytes, keep: int = 64) -> bytes:
    """A 64-bit ELF's headers and notes as they are, each loadable segment cut to
    its first ``keep`` file bytes (memsz unchanged), offsets rewritten."""
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    header = bytearray(data[:64])
    struct.pack_into("<QQ", header, 32, 64, 0)  # program headers right after; no section headers
    struct.pack_into("<HH", header, 60, 0, 0)
    table, body = bytearray(), bytearray()
    offset = 64 + phnum * phentsize
    for i in range(phnum):
        ph = bytearray(data[phoff + i * phentsize : phoff + (i + 1) * phentsize])
        kind, _flags, src, _v, _p, filesz, _m = struct.unpack_from("<IIQQQQQ", ph)
        if kind == 1:
            filesz = min(filesz, keep)
        chunk = data[src : src + filesz]
        struct.pack_into("<Q", ph, 8, offset + len(body))
        struct.pack_into("<Q", ph, 32, filesz)
        body += chunk + bytes(-len(chunk) % 8)
        table += ph
    return bytes(header + table + body)


def guest_elf() -> bytes:
    path = os.path.join(HERE, "..", "..", "guest", "build", "guest.elf")
    with open(path, "rb") as f:
        return f.read()


def elf_seeds() -> dict[str, bytes]:
    return {"bundled-guest-cut": compact_elf(guest_elf())}


def multiboot_seeds() -> dict[str, bytes]:
    magic = 0x1BADB002

    def header(flags, fields=b""):
        return struct.pack("<III", magic, flags, -(magic + flags) & 0xFFFFFFFF) + fields

    load = 0x100000
    code = b"\xf4" * 32
    size = 8 + 32 + len(code)
    fields = struct.pack("<5I", load + 8, load, load + size, load + size + 0x100, load + 8 + 32)
    return {
        "aout-kludge": bytes(8) + header(0x10003, fields) + code,
        "elf-form": compact_elf(guest_elf()) + header(0x3),
    }


def snapshot_seeds() -> dict[str, bytes]:
    """A snapshot of the bundled guest booted to its shell with a read-only disk
    (needs /dev/kvm), its disk path rewritten to the target's relative one."""
    import tempfile

    from vmm import DiskConfig, MicroVM, VmConfig
    from vmm.persist import snapshot

    from .fuzz_snapshot import DISK_NAME, disk_content
    from vmm.snapshot import format as fmt

    with tempfile.TemporaryDirectory() as where:
        disk = os.path.join(where, DISK_NAME)
        with open(disk, "wb") as f:
            f.write(disk_content())
        elf = os.path.join(HERE, "..", "..", "guest", "build", "guest.elf")
        vm = MicroVM(VmConfig(kernel=elf, mem_mib=4, timeout=120, devices=(DiskConfig(disk, read_only=True),))).start()
        try:
            vm.expect("$ ", timeout=60)
            vm.pause()
            snapshot(vm, os.path.join(where, "vm.state"), os.path.join(where, "vm.mem"))
        finally:
            vm.close()
        with open(os.path.join(where, "vm.state"), "rb") as f:
            state = f.read()
    body = fmt.Body.parse(state[fmt.Header.sizeof():])
    for slot in body.virtio:
        if str(slot.kind) == "block":
            slot.device.path = DISK_NAME.encode()
    return {"booted-guest-ro-disk": b"\0" + fmt.Body.build(body)}


def _request(method: str, path: str, body: bytes | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n".encode()
    if body is None:
        return head + b"\r\n"
    return head + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def api_seeds() -> dict[str, bytes]:
    boot = b"".join([
        _request("PUT", "/machine-config", b'{"vcpu_count": 1, "mem_size_mib": 64}'),
        _request("PUT", "/boot-source", b'{"kernel_image_path": "vmlinux", "boot_args": "console=ttyS0"}'),
        _request("PUT", "/drives/rootfs", b'{"drive_id": "rootfs", "path_on_host": "rootfs.ext4", "is_root_device": true, "is_read_only": true}'),
        _request("PUT", "/serial", b'{"serial_out_path": "serial.out"}'),
        _request("PUT", "/metrics", b'{"metrics_path": "metrics.json"}'),
        _request("PUT", "/actions", b'{"action_type": "InstanceStart"}'),
        _request("PATCH", "/vm", b'{"state": "Paused"}'),
        _request("PUT", "/snapshot/create", b'{"snapshot_type": "Full", "snapshot_path": "vm.state", "mem_file_path": "vm.mem"}'),
        _request("PUT", "/actions", b'{"action_type": "FlushMetrics"}'),
        _request("GET", "/"),
        _request("GET", "/machine-config"),
    ])
    chunked = (b"PATCH /machine-config HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"12\r\n{\"mem_size_mib\": 9}\r\n0\r\n\r\n")
    load = _request("PUT", "/snapshot/load",
                    b'{"snapshot_path": "vm.state", "mem_backend": {"backend_type": "File", "backend_path": "vm.mem"}, "resume_vm": true}')
    return {
        "configure-boot-snapshot": struct.pack("<HH", 90, 400) + boot,
        "chunked-patch": struct.pack("<HH", 0, 0) + chunked + _request("GET", "/machine-config"),
        "snapshot-load": struct.pack("<HH", 20, 0xFFFF) + load + _request("PATCH", "/vm", b'{"state": "Resumed"}'),
    }


REAL_BZIMAGE = os.path.expanduser("~/.cache/vmm/kernels")  # tests/linux/fetch_kernel.sh puts Debian's here


def tiny_vmlinux(paddr: int = 0x200000) -> bytes:
    """A 64-bit ELF with one loadable segment: what a bzImage's payload unpacks to."""
    code = b"\xf4" * 16
    header = bytearray(64)
    header[:16] = b"\x7fELF\x02\x01\x01" + bytes(9)
    struct.pack_into("<HHIQQQIHHHHHH", header, 16, 2, 62, 1, paddr, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 1, 5, 120, 0xFFFFFFFF80000000 + paddr, paddr, len(code), 0x1000, 0x1000)
    return bytes(header) + ph + code


def real_setup_header() -> bytes:
    """The first 0x270 bytes of a real bzImage (boot sector and setup header), or
    a made-up one with the same fields when no kernel was fetched."""
    for folder in (REAL_BZIMAGE,):
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.startswith("vmlinuz"):
                    with open(os.path.join(folder, name), "rb") as f:
                        return f.read(0x270)
    head = bytearray(0x270)
    head[0x1FE:0x200] = b"\x55\xaa"
    head[0x200:0x202] = b"\xeb\x6a"
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x206, 0x20F)
    head[0x211] = 0x01
    struct.pack_into("<IIBBH", head, 0x22C, 0x7FFFFFFF, 0x200000, 1, 21, 0x7F)
    struct.pack_into("<I", head, 0x238, 2047)
    return bytes(head)


def bzimage_seeds() -> dict[str, bytes]:
    import gzip

    payload = gzip.compress(tiny_vmlinux(), mtime=0)
    payload += struct.pack("<I", len(tiny_vmlinux()))
    setup = bytearray(real_setup_header()).ljust(0x400, b"\0")
    setup[0x1F1] = 1  # one setup sector: the protected-mode part starts at 0x400
    kernel = bytes(0x40) + payload
    kernel += bytes(-len(kernel) % 16)
    struct.pack_into("<I", setup, 0x1F4, len(kernel) // 16)  # syssize
    struct.pack_into("<II", setup, 0x248, 0x40, len(payload))  # payload_offset, payload_length
    struct.pack_into("<Q", setup, 0x258, 0x200000)  # pref_address
    struct.pack_into("<I", setup, 0x260, 0x10000)  # init_size
    image = bytes(setup) + kernel
    return {"real-header-tiny-gzip-unpacked": b"\0" + image, "real-header-tiny-gzip-stub": b"\1" + image}


SEEDS = {"mmio": mmio_seeds, "queue": queue_seeds, "block": block_seeds, "console": console_seeds, "elf": elf_seeds,
         "multiboot": multiboot_seeds, "bzimage": bzimage_seeds, "api": api_seeds, "snapshot": snapshot_seeds}


def main(names: list[str]) -> None:
    for name in names or TARGETS:
        if name not in SEEDS:
            continue
        folder = os.path.join(HERE, "corpus", name)
        os.makedirs(folder, exist_ok=True)
        for label, data in SEEDS[name]().items():
            with open(os.path.join(folder, f"seed-{label}"), "wb") as f:
                f.write(data)
            print(f"{name}/seed-{label}: {len(data)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
