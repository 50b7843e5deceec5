"""virtio-blk backed by a host file (virtio 1.x section 5.2).

Data moves between the file and guest RAM with os.preadv/os.pwritev on
memoryviews of guest memory: no intermediate copies. Every request gets an
answer: a status byte in the last byte of the chain when there is a writable
one, otherwise a used entry of length 0.
"""

from __future__ import annotations

import os
import stat
import struct

from ...binary import Layout
from ...errors import ConfigError
from ...log import get_logger
from ...record import record
from ...writeback import WriteBehind
from . import constants as c
from .device import VirtioDevice
from . import fastpath
from .queue import DescriptorChain, SplitQueue, StateError, check_bool, check_uint

log = get_logger("vmm.virtio.block")

QUEUE_SIZE = 256
SIZE_MAX = 1 << 20  # largest single data segment we advertise
SEG_MAX = 126  # data segments per request we advertise (config seg_max)
# Descriptors per request we accept: header + SEG_MAX segments + status. A
# longer chain (or indirect table) is refused unwalked and answered IOERR.
MAX_CHAIN_LEN = SEG_MAX + 2

# 5.2.6 struct virtio_blk_req, the device-readable header: type, reserved, sector.
REQUEST_HEADER = struct.Struct("<IIQ")
HEADER_SIZE = REQUEST_HEADER.size
PARALLEL_READ_BYTES = 1 << 20  # a batch reading at least this much is served by several threads
IO_WORKERS = min(2, os.cpu_count() or 1)
# Writes this large start their writeback at once. Smaller ones stay in the
# page cache until FLUSH or the kernel's own writeback: a page rewritten
# again and again (a log's last block) would otherwise go to disk each time.
WRITE_BEHIND_BYTES = 64 << 10

# 5.2.4 struct virtio_blk_config (fields up to write_zeroes_may_unmap), with
# the geometry and topology sub-structures flattened.
BLOCK_CONFIG = Layout(
    "BlockConfig",
    "capacity:Q size_max:I seg_max:I cylinders:H heads:B sectors:B blk_size:I "
    "physical_block_exp:B alignment_offset:B min_io_size:H opt_io_size:I writeback:B unused0:B num_queues:H "
    "max_discard_sectors:I max_discard_seg:I discard_sector_alignment:I "
    "max_write_zeroes_sectors:I max_write_zeroes_seg:I write_zeroes_may_unmap:B unused1:3s",
)

try:
    _IOV_MAX = os.sysconf("SC_IOV_MAX")
except (ValueError, OSError):
    _IOV_MAX = 1024


def _split(views: list[memoryview], n: int) -> tuple[list[memoryview], list[memoryview]]:
    """The first ``n`` bytes of the views' concatenation, and the rest (no copies)."""
    head: list[memoryview] = []
    for i, view in enumerate(views):
        if n == 0:
            return head, views[i:]
        if len(view) <= n:
            head.append(view)
            n -= len(view)
        else:
            head.append(view[:n])
            return head, [view[n:], *views[i + 1 :]]
    return head, []


def _shown(path: str) -> str:
    """The path for a one-line message: quoted if it holds a newline or other
    control character (a file may be named so; the message must stay one line)."""
    return path if path.isprintable() else repr(path)


def _total(views: list[memoryview]) -> int:
    return sum(len(v) for v in views)


class BlockState(record("BlockState", "path size read_only disk_id")):
    """What a restore checks to know it reopened the same disk (the fd is
    reopened, not saved; the image's contents are the file's business)."""

    __slots__ = ()


class VirtioBlock(VirtioDevice):
    device_id = c.VIRTIO_ID_BLOCK
    queue_max_sizes = (QUEUE_SIZE,)
    max_chain_len = MAX_CHAIN_LEN

    # The common request in C (fastpath.py); tests turn it off to get the pure model.
    use_fast_path = True

    def __init__(self, path: str | os.PathLike, read_only: bool = False, disk_id: bytes | None = None):
        super().__init__()
        self._executor = None
        self._fast: fastpath.BlkFastPath | None = None
        self._write_behind = WriteBehind()
        self.path = os.fspath(path)
        self.read_only = read_only
        self.fd = self._open(self.path, read_only)
        try:
            size = os.lseek(self.fd, 0, os.SEEK_END)
            if size % c.SECTOR_SIZE:
                raise ConfigError(
                    f"disk {_shown(self.path)}: size {size} is not a multiple of {c.SECTOR_SIZE} bytes"
                )
        except OSError as err:
            os.close(self.fd)
            raise ConfigError(f"disk {_shown(self.path)}: {err.strerror}") from None
        except ConfigError:
            os.close(self.fd)
            raise
        self.size_bytes = size
        self.capacity = size // c.SECTOR_SIZE
        if disk_id is None:
            disk_id = os.fsencode(os.path.basename(self.path))
        self.disk_id = bytes(disk_id)[: c.VIRTIO_BLK_ID_BYTES]
        self.features = (
            1 << c.VIRTIO_F_VERSION_1
            | 1 << c.VIRTIO_RING_F_INDIRECT_DESC
            | 1 << c.VIRTIO_RING_F_EVENT_IDX
            | 1 << c.VIRTIO_BLK_F_SIZE_MAX
            | 1 << c.VIRTIO_BLK_F_SEG_MAX
            | 1 << c.VIRTIO_BLK_F_BLK_SIZE
            | 1 << c.VIRTIO_BLK_F_FLUSH
            | (1 << c.VIRTIO_BLK_F_RO if read_only else 0)
        )
        self._config = BLOCK_CONFIG.pack(
            capacity=self.capacity, size_max=SIZE_MAX, seg_max=SEG_MAX, blk_size=c.SECTOR_SIZE, num_queues=1
        )

    @staticmethod
    def _open(path: str, read_only: bool) -> int:
        # Never O_CREAT: a typo must not silently create an empty disk.
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise ConfigError(f"disk {_shown(path)}: no such file") from None
        except PermissionError:
            hint = "" if read_only else " (use PATH,ro for a read-only disk)"
            raise ConfigError(f"disk {_shown(path)}: permission denied{hint}") from None
        except OSError as err:
            raise ConfigError(f"disk {_shown(path)}: {err.strerror}") from None
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            os.close(fd)
            raise ConfigError(f"disk {_shown(path)}: not a regular file or block device")
        try:
            VirtioBlock._lock(fd, path, read_only)
        except ConfigError:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _lock(fd: int, path: str, read_only: bool) -> None:
        """Advisory lock, as QEMU takes one: exclusive for read-write, shared
        for read-only, so two writers (or a writer and a reader) cannot share
        an image. flock() locks belong to the open file description, so a
        second open in this same process conflicts too; closing the fd drops it.
        """
        import fcntl  # only when a disk is attached: keeps `vmm run` start-up lean

        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if read_only else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            held = "read-write" if read_only else "(only read-only disks can be shared: PATH,ro)"
            raise ConfigError(f"disk {_shown(path)}: another VM (or this one) has it open {held}") from None
        except OSError as err:
            # A file system without flock (some FUSE mounts): run, but say so.
            log.warning("disk %s: cannot lock (%s); nothing stops another VM using it", _shown(path), err.strerror)

    def state(self) -> BlockState:
        return BlockState(self.path, self.size_bytes, self.read_only, self.disk_id)

    @classmethod
    def from_state(cls, state: BlockState) -> "VirtioBlock":
        """Reopen (and lock) the disk a record names; StateError if the record
        is malformed or the file is no longer the same size."""
        if not isinstance(state, BlockState):
            raise StateError(f"virtio state: disk record is a {type(state).__name__}, not a BlockState")
        if type(state.path) is not str or not state.path or "\0" in state.path:
            raise StateError(f"virtio state: disk path {state.path!r:.60} is not a file name")
        size = check_uint("disk size", state.size, 64)
        if size % c.SECTOR_SIZE:
            raise StateError(f"virtio state: disk size {size} is not a multiple of {c.SECTOR_SIZE}")
        read_only = check_bool("disk read_only", state.read_only)
        if type(state.disk_id) is not bytes or len(state.disk_id) > c.VIRTIO_BLK_ID_BYTES:
            raise StateError(f"virtio state: disk id {state.disk_id!r:.40} is not up to {c.VIRTIO_BLK_ID_BYTES} bytes")
        disk = cls(state.path, read_only=read_only, disk_id=state.disk_id)
        if disk.size_bytes != size:
            disk.close()
            raise StateError(f"disk {_shown(state.path)}: {disk.size_bytes} bytes now, {size} in the snapshot")
        return disk

    def close(self) -> None:
        self._fast = None
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def config(self) -> bytes:
        return self._config

    def activate(self, memory, queues, interrupt) -> None:
        self._fast = None
        if self.use_fast_path and fastpath.enabled():
            self._fast = fastpath.BlkFastPath(memory, self.size_bytes, self.read_only, self.max_chain_len)

    def process(self, queue_index: int, queue: SplitQueue) -> bool:
        # The common requests at the head of the ring go to C; at the first
        # other chain the model pops a batch (bounded: queue.pop_batch) and
        # answers it before looking again, so the guest sees answers as each
        # batch completes.
        added = False
        fast = self._fast
        while True:
            if fast is not None:
                while fast.serve(queue, self.fd):
                    added = True
            chains = queue.pop_batch()
            if not chains:
                return added
            self._answer_batch(queue, chains)
            added = True

    def _answer_batch(self, queue: SplitQueue, chains: list[DescriptorChain]) -> None:
        if len(chains) > 1 and sum(b.length for ch in chains for b in ch.buffers if b.writable) >= PARALLEL_READ_BYTES:
            # Large reads: preadv releases the GIL, so several run at once
            # (copying from the page cache is most of their cost). Writes stay
            # on one thread: buffered writes to one file serialize on its
            # inode lock, and two writers measured slower than one (64 x 1 MiB
            # pwritev: 6.5 ms from one thread, 7.6 ms from two). Small
            # requests stay inline too: a hand-off costs more than a 4 KiB read.
            used = list(self._pool().map(self._answer, chains))
        else:
            used = [self._answer(chain) for chain in chains]
        queue.push_used_many([(chain.head, length) for chain, length in zip(chains, used)])

    def _pool(self):
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=IO_WORKERS, thread_name_prefix="virtio-blk")
        return self._executor

    # -- one request -------------------------------------------------------------

    def _answer(self, chain: DescriptorChain) -> int:
        """Serve one chain and write its status; return the used length."""
        status_view = self._status_byte(chain)
        if status_view is None:
            log.debug("virtio-blk: chain %d has no status byte, answered empty", chain.head)
            return 0
        if not chain.valid:
            log.debug("virtio-blk: %s", chain.error)
            status_view[0] = c.VIRTIO_BLK_S_IOERR
            return 1
        status, written = self._execute(chain)
        status_view[0] = status
        return written + 1

    @staticmethod
    def _status_byte(chain: DescriptorChain) -> memoryview | None:
        """The last byte of the chain, if it is device-writable."""
        for buffer in reversed(chain.buffers):
            if buffer.length:
                return buffer.view[-1:] if buffer.writable else None
        return None

    def _execute(self, chain: DescriptorChain) -> tuple[int, int]:
        """(status, bytes of data written to the guest) for a well-formed chain."""
        buffers = chain.buffers
        first, last = buffers[0], buffers[-1]
        if len(buffers) >= 3 and first.length == HEADER_SIZE and not first.writable and last.length == 1:
            # The layout drivers use (header, data, status in buffers of their
            # own) needs none of the general path's splitting: ~30% of a 4 KiB
            # read's time. `last` is writable: _answer checked the status byte.
            kind, _reserved, sector = REQUEST_HEADER.unpack_from(first.view)
            data = buffers[1:-1]
            if kind == c.VIRTIO_BLK_T_IN and all(b.writable for b in data):
                return self._transfer(os.preadv, sector, [b.view for b in data])
            if kind == c.VIRTIO_BLK_T_OUT and not self.read_only and not any(b.writable for b in data):
                return self._write(sector, [b.view for b in data])
        readable = [b.view for b in chain.buffers if not b.writable]
        writable = [b.view for b in chain.buffers if b.writable]
        data_in, _status = _split(writable, _total(writable) - 1)
        header, data_out = _split(readable, HEADER_SIZE)
        if _total(header) < HEADER_SIZE:
            return c.VIRTIO_BLK_S_IOERR, 0
        kind, _reserved, sector = REQUEST_HEADER.unpack(b"".join(header))
        if kind == c.VIRTIO_BLK_T_IN:
            if _total(data_out):
                return c.VIRTIO_BLK_S_IOERR, 0  # data in the wrong direction
            return self._transfer(os.preadv, sector, data_in)
        if kind == c.VIRTIO_BLK_T_OUT:
            if _total(data_in) or self.read_only:
                return c.VIRTIO_BLK_S_IOERR, 0
            return self._write(sector, data_out)
        if kind == c.VIRTIO_BLK_T_FLUSH:
            try:
                os.fdatasync(self.fd)  # data and the metadata needed to read it back, as QEMU does
            except OSError as err:
                log.warning("virtio-blk %s: flush failed: %s", _shown(self.path), err.strerror)
                return c.VIRTIO_BLK_S_IOERR, 0
            return c.VIRTIO_BLK_S_OK, 0
        if kind == c.VIRTIO_BLK_T_GET_ID:
            ident = self.disk_id.ljust(c.VIRTIO_BLK_ID_BYTES, b"\0")
            return c.VIRTIO_BLK_S_OK, self._copy_into(data_in, ident)
        return c.VIRTIO_BLK_S_UNSUPP, 0

    def _write(self, sector: int, views: list[memoryview]) -> tuple[int, int]:
        """pwritev, then start writeback of a large write at once (vmm/writeback.py)."""
        status, moved = self._transfer(os.pwritev, sector, views)
        if status == c.VIRTIO_BLK_S_OK and moved >= WRITE_BEHIND_BYTES:
            self._write_behind.start(self.fd, sector * c.SECTOR_SIZE, moved)
        return status, 0

    def _transfer(self, op, sector: int, views: list[memoryview]) -> tuple[int, int]:
        """preadv/pwritev ``views`` at ``sector``; (status, bytes moved)."""
        length = _total(views)
        offset = sector * c.SECTOR_SIZE  # Python ints: no u64 wrap to exploit
        if length % c.SECTOR_SIZE or offset + length > self.size_bytes:
            return c.VIRTIO_BLK_S_IOERR, 0
        moved = 0
        try:
            if len(views) <= _IOV_MAX:  # the usual case: one call
                moved = op(self.fd, views, offset)
            else:
                for start in range(0, len(views), _IOV_MAX):
                    batch = views[start : start + _IOV_MAX]
                    done = op(self.fd, batch, offset + moved)
                    moved += done
                    if done != _total(batch):
                        break
        except OSError as err:
            log.warning("virtio-blk %s: I/O error at sector %d: %s", _shown(self.path), sector, err.strerror)
            return c.VIRTIO_BLK_S_IOERR, 0
        if moved != length:
            # Cannot happen in range unless the file shrank under us.
            log.warning("virtio-blk %s: short transfer at sector %d", _shown(self.path), sector)
            return c.VIRTIO_BLK_S_IOERR, 0
        return c.VIRTIO_BLK_S_OK, moved

    @staticmethod
    def _copy_into(views: list[memoryview], data: bytes) -> int:
        done = 0
        for view in views:
            if done == len(data):
                break
            n = min(len(view), len(data) - done)
            view[:n] = data[done : done + n]
            done += n
        return done
