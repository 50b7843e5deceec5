import fcntl
import hashlib
import os
import struct

import pytest

from vmm.devices.virtio import VirtioBlock, VirtioMmioTransport
from vmm.devices.virtio import block
from vmm.devices.virtio import constants as c
from vmm.errors import ConfigError
from vmm.memory import GuestMemory
from vmm.writeback import WriteBehind

from ..layouts import BlockConfig
from .virtio_mock import INDIRECT, NEXT, WRITE, InterruptLine, MockDriver, MockQueue

SECTORS = 64
RAM = 0x40000
HDR = 0x8000  # request headers
DATA = 0x10000  # data buffers
STATUS = 0x9000  # status bytes
TABLE = 0xA000  # indirect tables
OK, IOERR, UNSUPP = c.VIRTIO_BLK_S_OK, c.VIRTIO_BLK_S_IOERR, c.VIRTIO_BLK_S_UNSUPP
EVENT_IDX = 1 << c.VIRTIO_RING_F_EVENT_IDX


def header(kind, sector=0):
    return struct.pack("<IIQ", kind, 0, sector)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk0.img"
    path.write_bytes(bytes(i % 251 for i in range(SECTORS * 512)))
    return path


class Rig:
    """A VirtioBlock behind the transport, driven through a MockQueue."""

    def __init__(self, path, read_only=False, disk_id=None, mask=~0):
        self.mem = GuestMemory([(0, RAM)])
        self.dev = VirtioBlock(path, read_only=read_only, disk_id=disk_id)
        self.irq = InterruptLine()
        self.t = VirtioMmioTransport(self.dev, self.mem, self.irq)
        self.q = MockQueue.at(self.mem, 0x1000, 16)
        self.drv = MockDriver(self.t)
        self.drv.start([self.q], mask=mask)

    def submit(self, buffers, indirect=False):
        """Make a chain available without notifying; returns its head."""
        return self.q.add_chain(buffers, indirect_at=TABLE if indirect else None)

    def request(self, kind, sector=0, out=b"", in_len=0, *, split=(), indirect=False):
        """One request; returns (status, used_len, data read)."""
        hdr = header(kind, sector)
        self.mem.write(HDR, hdr + out)
        cuts = [0, *split, len(hdr) + len(out)]
        bufs = [(HDR + a, b - a, False) for a, b in zip(cuts, cuts[1:]) if b > a]
        if in_len:
            bufs.append((DATA, in_len, True))
        self.mem.write(STATUS, b"\xee")
        bufs.append((STATUS, 1, True))
        used_before = self.q.used_idx
        head = self.submit(bufs, indirect)
        self.drv.notify(0)
        assert self.q.used_idx == (used_before + 1) & 0xFFFF
        used_head, used_len = self.q.used(used_before)
        assert used_head == head
        return self.mem.read(STATUS, 1)[0], used_len, self.mem.read(DATA, in_len)


@pytest.fixture
def rig(disk):
    r = Rig(disk)
    yield r
    r.dev.close()


# -- construction and config ----------------------------------------------------------


def test_config_space(rig):
    cfg = BlockConfig.parse(rig.dev.config)
    assert cfg.capacity == SECTORS
    assert cfg.size_max == 1 << 20 and cfg.seg_max == 126 and cfg.blk_size == 512
    base = c.MMIO_CONFIG
    assert rig.t.read(base, 8) == SECTORS
    assert rig.t.read(base, 4) == SECTORS and rig.t.read(base + 4, 4) == 0
    assert rig.t.read(base + 20, 4) == 512
    assert rig.drv.rd(c.MMIO_DEVICE_ID) == 2
    assert rig.drv.rd(c.MMIO_QUEUE_NUM_MAX) == 256


def test_close_is_idempotent_and_register_events_is_a_noop(disk):
    dev = VirtioBlock(disk)
    dev.register_events(object())  # block waits on no host fd
    dev.close()
    dev.close()
    assert dev.fd == -1


def test_activated_with_the_transport_interrupt(disk):
    seen = []

    class Spy(VirtioBlock):
        def activate(self, memory, queues, interrupt):
            seen.append((memory, len(queues), interrupt))

    mem = GuestMemory([(0, RAM)])
    dev = Spy(disk)
    t = VirtioMmioTransport(dev, mem, InterruptLine())
    MockDriver(t).start([MockQueue.at(mem, 0x1000, 16)])
    assert seen == [(mem, 1, t.device_interrupt)]
    dev.close()


def test_features(disk):
    rw = VirtioBlock(disk)
    rw.close()
    ro = VirtioBlock(disk, read_only=True)
    ro.close()
    for bit in (32, 28, 29, 1, 2, 6, 9):
        assert rw.features & ro.features & (1 << bit)
    assert not rw.features & (1 << c.VIRTIO_BLK_F_RO)
    assert ro.features & (1 << c.VIRTIO_BLK_F_RO)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^disk .*nope\.img: no such file$"):
        VirtioBlock(tmp_path / "nope.img")
    assert not (tmp_path / "nope.img").exists()  # never created


def test_size_not_multiple_of_512(tmp_path):
    p = tmp_path / "odd.img"
    p.write_bytes(b"x" * 1000)
    with pytest.raises(ConfigError, match="multiple of 512"):
        VirtioBlock(p)


def test_directory_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"^disk "):
        VirtioBlock(tmp_path)
    with pytest.raises(ConfigError, match=r"^disk "):
        VirtioBlock(tmp_path, read_only=True)


def test_read_only_file_opened_rw(disk, monkeypatch):
    real_open = os.open

    def fake_open(path, flags, *args):
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", fake_open)
    with pytest.raises(ConfigError, match=r"^disk .*: permission denied"):
        VirtioBlock(disk)
    VirtioBlock(disk, read_only=True).close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_read_only_file_mode(disk):
    disk.chmod(0o444)
    with pytest.raises(ConfigError, match="permission denied"):
        VirtioBlock(disk)


def test_read_only_opens_rdonly(disk):
    dev = VirtioBlock(disk, read_only=True)
    assert fcntl.fcntl(dev.fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    dev.close()


def test_empty_file_is_a_zero_sector_disk(tmp_path):
    p = tmp_path / "empty.img"
    p.write_bytes(b"")
    assert VirtioBlock(p).capacity == 0


# -- requests ----------------------------------------------------------------------------


def test_read(rig, disk):
    status, used, data = rig.request(c.VIRTIO_BLK_T_IN, 3, in_len=1024)
    assert status == OK and used == 1025
    assert data == disk.read_bytes()[3 * 512 : 5 * 512]


def test_write_then_read(rig, disk):
    payload = os.urandom(1536)
    status, used, _ = rig.request(c.VIRTIO_BLK_T_OUT, 10, out=payload)
    assert (status, used) == (OK, 1)
    assert disk.read_bytes()[10 * 512 : 13 * 512] == payload
    status, used, data = rig.request(c.VIRTIO_BLK_T_IN, 10, in_len=1536)
    assert status == OK and data == payload


class RecordingWriteBehind:
    def __init__(self):
        self.calls = []

    def start(self, fd, offset, length):
        self.calls.append((offset, length))


def test_large_writes_start_writeback_at_once_small_ones_do_not(tmp_path):
    path = tmp_path / "big.img"
    path.write_bytes(bytes(256 * 512))
    r = Rig(path)
    r.dev._write_behind = recorder = RecordingWriteBehind()
    payload = os.urandom(block.WRITE_BEHIND_BYTES)

    def large_write(sector):
        r.mem.write(HDR, header(c.VIRTIO_BLK_T_OUT, sector))
        r.mem.write(DATA, payload)
        r.submit([(HDR, 16, False), (DATA, len(payload), False), (STATUS, 1, True)])
        r.drv.notify(0)
        return r.mem.read(STATUS, 1)[0]

    try:
        assert large_write(2) == OK
        assert recorder.calls == [(2 * 512, len(payload))]
        assert path.read_bytes()[1024 : 1024 + len(payload)] == payload
        assert r.request(c.VIRTIO_BLK_T_OUT, 0, out=os.urandom(4096))[0] == OK
        assert recorder.calls == [(2 * 512, len(payload))]  # the 4 KiB write stays in the page cache
        # a hostile guest's writes past the end fail before any writeback is asked for
        for sector in (200, 2**63, 2**64 - 1):
            assert large_write(sector) == IOERR
        assert recorder.calls == [(2 * 512, len(payload))]
    finally:
        r.dev.close()


def test_write_behind_runs_on_a_real_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(os.urandom(1 << 20))
    fd = os.open(path, os.O_RDWR)
    try:
        behind = WriteBehind()
        behind.start(fd, 0, 1 << 20)
        assert behind._call is not None  # glibc has sync_file_range
    finally:
        os.close(fd)


def test_last_sector(rig, disk):
    status, _, data = rig.request(c.VIRTIO_BLK_T_IN, SECTORS - 1, in_len=512)
    assert status == OK and data == disk.read_bytes()[-512:]


def test_flush(rig):
    assert rig.request(c.VIRTIO_BLK_T_FLUSH)[:2] == (OK, 1)


def test_get_id_default(rig):
    status, used, data = rig.request(c.VIRTIO_BLK_T_GET_ID, in_len=20)
    assert status == OK and used == 21
    assert data == b"disk0.img".ljust(20, b"\0")


def test_get_id_custom_and_truncated(disk):
    r = Rig(disk, disk_id=b"A" * 30)
    status, used, data = r.request(c.VIRTIO_BLK_T_GET_ID, in_len=20)
    assert (status, used, data) == (OK, 21, b"A" * 20)
    status, used, data = r.request(c.VIRTIO_BLK_T_GET_ID, in_len=8)
    assert (status, used, data) == (OK, 9, b"A" * 8)


def test_unsupported(rig):
    for kind in (2, 11, 13, 0xFFFFFFFF):
        assert rig.request(kind, in_len=512)[:2] == (UNSUPP, 1)


def test_header_split_across_descriptors(rig, disk):
    status, _, data = rig.request(c.VIRTIO_BLK_T_IN, 2, in_len=512, split=(1, 5, 12))
    assert status == OK and data == disk.read_bytes()[1024:1536]
    payload = os.urandom(1024)
    # header tail and data share a descriptor, data split unevenly
    assert rig.request(c.VIRTIO_BLK_T_OUT, 4, out=payload, split=(7, 300, 900))[0] == OK
    assert disk.read_bytes()[2048:3072] == payload


def test_data_split_across_many_descriptors(rig, disk):
    rig.mem.write(HDR, header(c.VIRTIO_BLK_T_IN, 1))
    pieces = [(DATA + 0x400 * i, n, True) for i, n in enumerate([1, 511, 100, 412])]
    rig.submit([(HDR, 16, False), *pieces, (STATUS, 1, True)])
    rig.drv.notify(0)
    got = b"".join(rig.mem.read(a, n) for a, n, _ in pieces)
    assert got == disk.read_bytes()[512:1536]
    assert rig.q.used(0)[1] == 1025
    assert rig.mem.read(STATUS, 1) == bytes([OK])


def test_status_shares_last_data_descriptor(rig, disk):
    rig.mem.write(HDR, header(c.VIRTIO_BLK_T_IN, 0))
    rig.submit([(HDR, 16, False), (DATA, 513, True)])
    rig.drv.notify(0)
    assert rig.mem.read(DATA, 512) == disk.read_bytes()[:512]
    assert rig.mem.read(DATA + 512, 1) == bytes([OK])


def test_indirect_request(rig, disk):
    status, used, data = rig.request(c.VIRTIO_BLK_T_IN, 5, in_len=512, indirect=True)
    assert (status, used) == (OK, 513) and data == disk.read_bytes()[2560:3072]


def test_many_chains_one_interrupt(rig):
    for i in range(5):
        rig.mem.write(HDR + 32 * i, header(c.VIRTIO_BLK_T_IN, i))
        rig.submit([(HDR + 32 * i, 16, False), (DATA + 512 * i, 512, True), (STATUS + i, 1, True)])
    rig.drv.notify(0)
    assert rig.q.used_idx == 5
    assert rig.irq.calls == [True]
    assert rig.mem.read(STATUS, 5) == bytes(5)


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sector,length",
    [(SECTORS, 512), (SECTORS - 1, 1024), (2**64 - 1, 512), (2**55, 512), (2**64 - 2, 1024)],
)
def test_out_of_range(rig, disk, sector, length):
    before = sha256(disk)
    assert rig.request(c.VIRTIO_BLK_T_IN, sector, in_len=length)[:2] == (IOERR, 1)
    assert rig.request(c.VIRTIO_BLK_T_OUT, sector, out=b"z" * length)[:2] == (IOERR, 1)
    assert sha256(disk) == before


def test_length_not_multiple_of_512(rig, disk):
    before = sha256(disk)
    assert rig.request(c.VIRTIO_BLK_T_IN, 0, in_len=100)[0] == IOERR
    assert rig.request(c.VIRTIO_BLK_T_OUT, 0, out=b"z" * 513)[0] == IOERR
    assert sha256(disk) == before


def test_wrong_directions(rig, disk):
    before = sha256(disk)
    # IN with device-readable data after the header
    assert rig.request(c.VIRTIO_BLK_T_IN, 0, out=b"z" * 512, in_len=512)[0] == IOERR
    # OUT with device-writable data before the status
    assert rig.request(c.VIRTIO_BLK_T_OUT, 0, out=b"z" * 512, in_len=512)[0] == IOERR
    assert sha256(disk) == before


def test_short_header(rig):
    rig.mem.write(HDR, header(c.VIRTIO_BLK_T_IN))
    rig.submit([(HDR, 15, False), (STATUS, 1, True)])
    rig.drv.notify(0)
    assert rig.mem.read(STATUS, 1) == bytes([IOERR]) and rig.q.used(0)[1] == 1


def test_no_status_byte(rig):
    rig.mem.write(HDR, header(c.VIRTIO_BLK_T_FLUSH))
    rig.submit([(HDR, 16, False)])
    rig.submit([(HDR, 16, False), (STATUS, 0, True)])
    rig.drv.notify(0)
    assert rig.q.used_idx == 2
    assert rig.q.used(0)[1] == 0 and rig.q.used(1)[1] == 0


def test_invalid_chain_with_status_byte(rig):
    q = rig.q
    rig.mem.write(STATUS, b"\xee")
    # header, status, then a descriptor pointing outside RAM
    q.write_desc(0, HDR, 16, NEXT, 1)
    q.write_desc(1, STATUS, 1, NEXT | WRITE, 2)
    q.write_desc(2, RAM + 0x1000, 16, WRITE)
    q.publish(0)
    rig.drv.notify(0)
    assert rig.q.used(0) == (0, 1)
    assert rig.mem.read(STATUS, 1) == bytes([IOERR])


def test_invalid_chain_without_status_byte(rig):
    q = rig.q
    q.write_desc(0, HDR, 16, NEXT, 0)  # loops on itself, readable only
    q.publish(0)
    rig.drv.notify(0)
    assert rig.q.used_idx == 1 and rig.q.used(0) == (0, 0)
    assert not rig.drv.status & c.STATUS_DEVICE_NEEDS_RESET


def test_head_out_of_range_answers_earlier_chains_then_needs_reset(rig):
    q = rig.q
    q.write_desc(0, HDR, 16, NEXT, 0)
    q.publish(0)
    q.publish(99)  # not a descriptor index: the ring is broken, no chain to return
    rig.drv.notify(0)
    assert rig.q.used_idx == 1 and rig.q.used(0) == (0, 0)
    assert rig.drv.status & c.STATUS_DEVICE_NEEDS_RESET


def test_indirect_not_negotiated_answered(disk):
    r = Rig(disk, mask=~(1 << c.VIRTIO_RING_F_INDIRECT_DESC))
    r.mem.write(HDR, header(c.VIRTIO_BLK_T_IN))
    r.q.write_table(TABLE, [(HDR, 16, NEXT, 1), (STATUS, 1, WRITE, 0)])
    r.q.write_desc(0, TABLE, 32, INDIRECT)
    r.q.publish(0)
    r.drv.notify(0)
    assert r.q.used(0) == (0, 0)


def test_host_io_error(rig):
    r, w = os.pipe()  # preadv/pwritev on a pipe fail with ESPIPE
    real = rig.dev.fd
    rig.dev.fd = r
    try:
        assert rig.request(c.VIRTIO_BLK_T_IN, 0, in_len=512)[:2] == (IOERR, 1)
        assert rig.request(c.VIRTIO_BLK_T_OUT, 0, out=b"x" * 512)[:2] == (IOERR, 1)
        assert rig.request(c.VIRTIO_BLK_T_FLUSH)[0] == IOERR
    finally:
        rig.dev.fd = real
        os.close(r)
        os.close(w)


def test_file_shrunk_under_us(rig, disk):
    os.truncate(disk, 512)
    assert rig.request(c.VIRTIO_BLK_T_IN, 4, in_len=512)[0] == IOERR


def test_read_only_disk_untouched(disk):
    before = sha256(disk)
    r = Rig(disk, read_only=True)
    for sector in (0, 5, SECTORS - 1, SECTORS, 2**64 - 1):
        assert r.request(c.VIRTIO_BLK_T_OUT, sector, out=b"w" * 512)[0] == IOERR
    assert r.request(c.VIRTIO_BLK_T_FLUSH)[0] == OK
    status, _, data = r.request(c.VIRTIO_BLK_T_IN, 0, in_len=512)
    assert status == OK and data == disk.read_bytes()[:512]
    assert sha256(disk) == before


# -- notification suppression ------------------------------------------------------------------


def test_event_idx_suppression(rig):
    q = rig.q
    q.set_used_event(5)  # the driver wants an interrupt once entry 5 is used
    for i in range(5):
        rig.request(c.VIRTIO_BLK_T_FLUSH)
        assert rig.irq.raised == 1  # only the very first batch (nothing signalled yet)
        rig.drv.ack_interrupts()
        assert q.avail_event == i + 1  # "notify me at the next buffer"
    calls = list(rig.irq.calls)
    rig.request(c.VIRTIO_BLK_T_FLUSH)  # used idx 5 -> 6: entry 5 used
    assert rig.irq.calls == [*calls, True]


def test_no_interrupt_flag_without_event_idx(disk):
    r = Rig(disk, mask=~EVENT_IDX)
    r.q.set_avail_flags(c.VIRTQ_AVAIL_F_NO_INTERRUPT)
    r.request(c.VIRTIO_BLK_T_FLUSH)
    assert r.irq.calls == []
    r.q.set_avail_flags(0)
    r.request(c.VIRTIO_BLK_T_FLUSH)
    assert r.irq.calls == [True]


def test_two_disks_are_independent(tmp_path):
    paths = []
    for i in range(2):
        p = tmp_path / f"d{i}.img"
        p.write_bytes(bytes([i + 1]) * 1024)
        paths.append(p)
    rigs = [Rig(p) for p in paths]
    for i, r in enumerate(rigs):
        status, _, data = r.request(c.VIRTIO_BLK_T_IN, 1, in_len=512)
        assert status == OK and data == bytes([i + 1]) * 512
