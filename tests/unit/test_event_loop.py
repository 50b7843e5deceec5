import os
import threading
import time

import pytest

from vmm.event_loop import EventLoop


@pytest.fixture
def loop():
    errors = []
    loop = EventLoop(on_error=errors.append)
    loop.errors = errors
    loop.start()
    yield loop
    loop.close()


def test_fd_callback_runs_on_the_loop_thread(loop):
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    seen = []
    done = threading.Event()

    def on_ready():
        seen.append((os.eventfd_read(fd), threading.current_thread().name))
        done.set()

    loop.register(fd, on_ready)
    os.eventfd_write(fd, 3)
    assert done.wait(2)
    assert seen == [(3, "vmm-events")]
    loop.unregister(fd)
    os.close(fd)


def test_register_twice_is_refused(loop):
    fd = os.eventfd(0)
    loop.register(fd, lambda: None)
    with pytest.raises(ValueError):
        loop.register(fd, lambda: None)
    loop.unregister(fd)
    loop.unregister(fd)  # twice is harmless
    os.close(fd)


def test_timers_fire_in_order_and_cancel(loop):
    fired = []
    done = threading.Event()
    loop.call_later(0.05, lambda: fired.append("b"))
    loop.call_later(0.01, lambda: fired.append("a"))
    cancelled = loop.call_later(0.02, lambda: fired.append("never"))
    cancelled.cancel()
    loop.call_later(0.08, done.set)
    assert done.wait(2)
    assert fired == ["a", "b"]


def test_call_soon_and_barrier(loop):
    ran = []
    for i in range(100):
        loop.call_soon(lambda i=i: ran.append(i))
    assert loop.barrier(2)
    assert ran == list(range(100))


def test_a_failing_callback_is_reported_once(loop):
    def boom():
        raise RuntimeError("device bug")

    loop.call_soon(boom)
    deadline = time.monotonic() + 2
    while not loop.errors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [str(e) for e in loop.errors] == ["device bug"]
    assert not loop.running


def test_stop_returns_while_idle():
    loop = EventLoop()
    loop.start()
    started = time.monotonic()
    loop.close()
    assert time.monotonic() - started < 1
    assert not loop.running
