"""virtio-console end to end: the guest's `pipe` copies host input on one port back out on another."""

import os
import re
import threading
import time

import pytest

from vmm import DiskConfig, MicroVM, VmConfig
from vmm.devices.virtio.console import VirtioConsole

pytestmark = pytest.mark.kvm
PROMPT = "$ "
PIPE_DONE = re.compile(rb"pipe: (\d+) bytes[^\r]*?(?:\((\d+) notifies, (\d+) idle waits\))?\r\n")


class Host:
    """A VirtioConsole in a booted guest, collecting what the guest sends per port."""

    def __init__(self, guest_elf, names=("stdin", "stdout"), *, ioeventfd=True, disks=()):
        self.chunks = {}
        self.dev = VirtioConsole(list(names), on_output=self._output)
        config = VmConfig(kernel=str(guest_elf), mem_mib=64, timeout=120, ioeventfd=ioeventfd, devices=disks)
        self.vm = MicroVM(config, virtio_devices=[self.dev]).start()
        self.vm.expect(PROMPT, timeout=20)

    def _output(self, port, data):
        self.chunks.setdefault(port, []).append(data)

    def received(self, port) -> bytes:
        return b"".join(self.chunks.get(port, []))

    def run(self, line, timeout=30) -> str:
        self.vm.send(line + "\r")
        start = self.vm.expect(line + "\r\n", timeout).end()
        prompt = self.vm.expect(PROMPT, timeout)
        return self.vm.output[start : prompt.start()].decode()

    def feed(self, port, data):
        """Write all of data, waiting for room whenever the backlog is full."""
        view = memoryview(data)
        while view:
            taken = self.dev.write(port, view[: 1 << 20])
            view = view[taken:]
            if not taken:
                assert self.dev.wait_writable(port, timeout=30), "guest stopped taking input"

    def close(self):
        self.vm.close()


@pytest.fixture
def host(guest_elf):
    h = Host(guest_elf)
    yield h
    h.close()


def pipe(host, data: bytes, *, close=True) -> tuple[int, float, dict]:
    """Run `pipe stdin stdout`, feed data, close; returns (count reported, seconds, exits).

    ``exits`` holds vm.exit_summary()'s difference plus the guest's own count of
    QueueNotify writes and idle waits (with ioeventfd, notifies exit into KVM
    only and are not in the summary)."""
    host.vm.send("pipe stdin stdout\r")
    host.vm.expect("pipe stdin stdout\r\n")
    exits_before = host.vm.exit_summary()
    start = time.monotonic()
    host.feed(0, data)
    if close:
        host.dev.close_port(0)
    done = host.vm.expect(PIPE_DONE, timeout=60)
    seconds = time.monotonic() - start
    host.vm.expect(PROMPT)
    exits = {k: n - exits_before.get(k, 0) for k, n in host.vm.exit_summary().items()}
    exits["guest notifies"], exits["guest idle waits"] = int(done.group(2)), int(done.group(3))
    return int(done.group(1)), seconds, exits


def test_ports_are_listed_by_name(host):
    out = host.run("ports")
    assert "port 0: stdin (host open, guest closed)" in out, out
    assert "port 1: stdout (host open, guest closed)" in out, out
    assert "no port named 'stderr'" in host.run("pipe stdin stderr")


def test_guest_writes_reach_the_host_and_open_the_port(host):
    assert not host.dev.port_open(1)
    assert host.run("conwrite stdout hello  from the guest") == ""
    assert host.received(1) == b"hello from the guest\n"
    assert host.dev.port_open(1) and not host.dev.port_open(0)


def test_pipe_10_mib_of_binary_data(host):
    data = os.urandom(10 << 20) + bytes(4096)  # zero bytes at the end as well as inside
    count, seconds, exits = pipe(host, data)
    assert count == len(data)
    assert not host.dev.port_open(1)  # pipe closed its output: the host sees the end
    received = host.received(1)
    assert len(received) == len(data) and received == data
    mib = len(data) / (1 << 20)
    print(f"\nvirtio-console pipe: {mib:.1f} MiB in {seconds * 1000:.0f} ms, {mib / seconds:.0f} MiB/s, exits {exits}")
    # batched: about 8 notifies per MiB (one per half-ring of receive buffers, one
    # per write); one per 64 KiB buffer would be 32 per MiB
    assert exits["guest notifies"] < 20 * mib, exits
    assert exits.get("io", 0) + exits.get("mmio", 0) < 2000, exits


def test_pipe_empty_input(host):
    count, _, _ = pipe(host, b"")
    assert count == 0 and host.received(1) == b""
    # the port stays at EOF: a second pipe ends at once
    host.vm.send("pipe stdin stdout\r")
    assert host.vm.expect(PIPE_DONE, timeout=10).group(1) == b"0"


def test_input_written_and_closed_before_the_guest_reads_is_delivered(host):
    host.dev.write(0, b"early \0 bird")
    host.dev.close_port(0)
    out = host.run("pipe stdin stdout")
    assert "pipe: 12 bytes" in out, out
    assert host.received(1) == b"early \0 bird"


def test_slow_trickle_of_small_writes(host):
    host.vm.send("pipe stdin stdout\r")
    host.vm.expect("pipe stdin stdout\r\n")
    pieces = [bytes([i]) * (i % 7) for i in range(200)]  # empty writes included
    for piece in pieces:
        host.dev.write(0, piece)
        if len(piece) == 3:
            time.sleep(0.002)  # let the guest catch up and wait for more now and then
    host.dev.close_port(0)
    done = host.vm.expect(PIPE_DONE, timeout=30)
    assert int(done.group(1)) == sum(map(len, pieces))
    assert host.received(1) == b"".join(pieces)


@pytest.mark.parametrize("ioeventfd", [False], ids=["vcpu-thread"])
def test_pipe_with_notifies_on_the_vcpu_thread(guest_elf, ioeventfd):
    h = Host(guest_elf, ioeventfd=ioeventfd)
    try:
        data = os.urandom(1 << 20)
        count, _, _ = pipe(h, data)
        assert count == len(data) and h.received(1) == data
    finally:
        h.close()


def test_console_after_a_disk(guest_elf, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    h = Host(guest_elf, ("in", "out", "err"), disks=(DiskConfig(str(disk)),))
    try:
        assert "disk 0: 2048 sectors" in h.run("disks")
        assert "port 2: err" in h.run("ports")
        h.run("conwrite err oops")
        assert h.received(2) == b"oops\n"
        writer = threading.Thread(target=lambda: (h.feed(0, b"x" * 100000), h.dev.close_port(0)))
        writer.start()
        assert "pipe: 100000 bytes" in h.run("pipe in out")
        writer.join()
    finally:
        h.close()


def test_guest_without_a_console(guest_elf):
    vm = MicroVM(VmConfig(kernel=str(guest_elf), mem_mib=64, timeout=60)).start()
    try:
        vm.expect(PROMPT, timeout=20)
        vm.send("ports\r")
        vm.expect("ports: no virtio console")
    finally:
        vm.close()


def test_guest_driver_against_qemu_virtio_serial(guest_elf, tmp_path):
    """The same guest driver against an independent device: QEMU's virtio-serial,
    whose ports have gaps (no port 0) and whose host ends connect late."""
    import select
    import socket
    import subprocess

    from vmm.bench.contenders import QemuContender

    qemu = QemuContender()
    if qemu.unavailable:
        pytest.skip(qemu.unavailable)
    sock_path, out_path = tmp_path / "in.sock", tmp_path / "out.bin"
    argv = qemu.argv(str(guest_elf), 64, []) + [
        "-chardev", f"socket,id=cin,path={sock_path},server=on,wait=off",
        "-chardev", f"file,id=cout,path={out_path}",
        "-device", "virtio-serial-device,max_ports=4",
        "-device", "virtserialport,chardev=cin,name=stdin,nr=1",
        "-device", "virtserialport,chardev=cout,name=stdout,nr=2",
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pending = b""

    def expect(text: bytes, timeout=30) -> bytes:
        nonlocal pending
        deadline = time.monotonic() + timeout
        while text not in pending:
            ready, _, _ = select.select([proc.stdout], [], [], max(0, deadline - time.monotonic()))
            chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
            assert chunk, f"{text!r} not seen; output ends with {pending[-300:]!r}"
            pending += chunk
        end = pending.index(text) + len(text)
        seen, pending = pending[:end], pending[end:]
        return seen

    def run(line: str) -> str:
        proc.stdin.write(line.encode() + b"\r")
        proc.stdin.flush()
        expect(line.encode() + b"\r\n")
        return expect(b"$ ").decode()

    try:
        expect(b"$ ")
        assert "port 1: stdin (host closed" in run("ports")  # nothing connected to the socket yet
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(sock_path))
            deadline = time.monotonic() + 10
            while "port 1: stdin (host open" not in run("ports"):
                assert time.monotonic() < deadline
            data = os.urandom(200000) + bytes(100)
            proc.stdin.write(b"pipe stdin stdout\r")
            proc.stdin.flush()
            conn.sendall(data)
            # QEMU reports the disconnect at once, perhaps before it has passed
            # on everything read: close only once all of it is through
            deadline = time.monotonic() + 20
            while out_path.stat().st_size < len(data):
                assert time.monotonic() < deadline, out_path.stat().st_size
                time.sleep(0.01)
        assert b"pipe: %d bytes" % len(data) in expect(b"$ ")
        assert out_path.read_bytes() == data
    finally:
        proc.kill()
        proc.wait()
