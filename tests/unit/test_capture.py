import re
import threading

import pytest

from vmm.capture import OutputCapture, OutputFanout


def test_expect_finds_literals_in_order():
    cap = OutputCapture()
    cap.write(b"boot\r\n$ ")
    assert cap.expect("$ ", timeout=0).end() == 8
    cap.write(b"echo hi\r\nhi\r\n$ ")
    assert cap.expect(b"hi\r\n$ ", timeout=0)
    with pytest.raises(TimeoutError):
        cap.expect("$ ", timeout=0.05)  # the only prompt left was consumed


def test_expect_waits_for_output_from_another_thread():
    cap = OutputCapture()
    threading.Timer(0.05, cap.write, args=(b"late line\n",)).start()
    assert cap.expect(re.compile(rb"late (\w+)"), timeout=2).group(1) == b"line"


def test_capture_is_bounded_and_keeps_the_newest_output():
    cap = OutputCapture(limit=1000)
    for i in range(100):
        cap.write(b"%05d" % i * 10)
    assert len(cap.data) <= 1000
    assert cap.data.endswith(b"00099" * 10)
    assert cap.expect("00099", timeout=0)


def test_close_wakes_a_waiter_with_the_reason():
    cap = OutputCapture()
    threading.Timer(0.05, cap.close, args=("VM stopped (poweroff)",)).start()
    with pytest.raises(TimeoutError, match="VM stopped"):
        cap.expect("never", timeout=5)


def test_fanout_reaches_every_sink(tmp_path):
    got = []
    cap = OutputCapture()
    read_fd, write_fd = __import__("os").pipe()
    log = open(tmp_path / "log", "ab", buffering=0)
    fan = OutputFanout(callback=got.append, fd=write_fd, log_file=log, capture=cap)
    assert fan.plain_fds is None  # a callback and a capture need Python
    fan(b"abc")
    fan.close()
    assert got == [b"abc"] and cap.data == b"abc"
    assert __import__("os").read(read_fd, 10) == b"abc"
    assert (tmp_path / "log").read_bytes() == b"abc"


def test_plain_fds_when_only_fds():
    assert OutputFanout(fd=1).plain_fds == [1]
    assert OutputFanout().plain_fds == []
