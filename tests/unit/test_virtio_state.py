"""state() / from_state(): plain comparable records, round trips, hostile records refused."""

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vmm.devices.virtio import (
    BlockState,
    QueueState,
    SplitQueue,
    StateError,
    TransportState,
    VirtioBlock,
    VirtioDevice,
    VirtioMmioTransport,
)
from vmm.devices.virtio import constants as c
from vmm.errors import ConfigError
from vmm.memory import GuestMemory

from .virtio_mock import InterruptLine, MockDriver, MockQueue

RAM = 0x20000
DATA = 0x8000
VERSION_1 = 1 << c.VIRTIO_F_VERSION_1
EVENT_IDX = 1 << c.VIRTIO_RING_F_EVENT_IDX
INDIRECT = 1 << c.VIRTIO_RING_F_INDIRECT_DESC
RUNNING = c.STATUS_ACKNOWLEDGE | c.STATUS_DRIVER | c.STATUS_FEATURES_OK | c.STATUS_DRIVER_OK

HYPOTHESIS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Echo(VirtioDevice):
    """Two queues; answers every chain with length 0; remembers activations."""

    device_id = 42
    features = VERSION_1 | EVENT_IDX | INDIRECT
    queue_max_sizes = (16, 8)

    def __init__(self):
        super().__init__()
        self.activations = []

    def activate(self, memory, queues, interrupt):
        self.activations.append((memory, queues, interrupt))

    def process(self, index, queue):
        added = False
        while (chain := queue.pop()) is not None:
            queue.push_used(chain.head, 0)
            added = True
        return added


def running_transport(mem=None, features=None):
    mem = mem or GuestMemory([(0, RAM)])
    t = VirtioMmioTransport(Echo(), mem, InterruptLine())
    queues = [MockQueue.at(mem, 0x1000, 16), MockQueue.at(mem, 0x2000, 8)]
    drv = MockDriver(t)
    drv.start(queues, features=features)
    return mem, t, drv, queues


def restore(t, mem, state=None):
    return VirtioMmioTransport.from_state(Echo(), mem, InterruptLine(), t.state() if state is None else state)


# -- round trips ---------------------------------------------------------------------------


def test_records_are_plain_comparable_tuples():
    mem, t, drv, queues = running_transport()
    state = t.state()
    assert isinstance(state, TransportState) and isinstance(state, tuple)
    assert isinstance(state.queues, tuple) and isinstance(state.queues[0], QueueState)
    assert state == t.state() and state._replace(config_generation=7) != state
    assert state.status == RUNNING and state.acked_features == Echo.features


def test_running_transport_round_trip_and_keeps_working():
    mem, t, drv, queues = running_transport()
    for _ in range(3):
        queues[0].add_chain([(DATA, 8, True)])
        drv.notify(0)
    drv.wr(c.MMIO_QUEUE_SEL, 1)
    before = t.state()
    assert before.queues[0].next_used == 3 and before.interrupt_status == c.MMIO_INT_VRING
    restored = restore(t, mem)
    assert restored.state() == before
    device = restored.device
    assert len(device.activations) == 1 and device.activations[0][2] is restored.device_interrupt
    assert device.acked_features == Echo.features
    # The driver carries on against the restored transport.
    drv2 = MockDriver(restored)
    queues[0].add_chain([(DATA, 8, True)])
    drv2.notify(0)
    assert queues[0].used_idx == 4
    assert drv2.rd(c.MMIO_QUEUE_NUM_MAX) == 8  # queue_sel 1 came back


@pytest.mark.parametrize("stage", ["fresh", "negotiated", "one queue ready", "needs reset", "failed", "refused"])
def test_round_trip_at_every_stage(stage):
    mem = GuestMemory([(0, RAM)])
    t = VirtioMmioTransport(Echo(), mem, InterruptLine())
    drv = MockDriver(t)
    q = MockQueue.at(mem, 0x1000, 16)
    if stage != "fresh":
        drv.negotiate(features=VERSION_1 if stage != "refused" else VERSION_1 | 1 << 60)
    if stage == "one queue ready":
        drv.setup_queue(0, q)
        drv.wr(c.MMIO_QUEUE_SEL, 0xFFFF_FFFF)  # stored as "no queue"
    if stage == "needs reset":
        drv.wr(c.MMIO_STATUS, c.STATUS_ACKNOWLEDGE)  # clearing bits: a violation
    if stage == "failed":
        drv.wr(c.MMIO_STATUS, drv.status | c.STATUS_FAILED)
    state = t.state()
    restored = restore(t, mem, state)
    assert restored.state() == state
    assert restored.device.activations == []


def test_queue_round_trip():
    mem = GuestMemory([(0, RAM)])
    mq = MockQueue.at(mem, 0x1000, 16)
    q = SplitQueue(mem, 16)
    q.desc_addr, q.avail_addr, q.used_addr = mq.desc_addr, mq.avail_addr, mq.used_addr
    q.event_idx = True
    q.enable()
    mq.add_chain([(DATA, 8, True)])
    mq.add_chain([(DATA, 8, True)])
    first = q.pop()
    q.push_used(first.head, 0)
    q.needs_interrupt()
    state = q.state()
    assert (state.next_avail, state.next_used, state.signalled_used) == (1, 1, 1)
    again = SplitQueue.from_state(mem, state, 16)
    assert again.state() == state
    assert again.pop().head == 1  # picks up where the first left off


def test_block_round_trip(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(8 * 512))
    disk = VirtioBlock(path, disk_id=b"serial-1")
    state = disk.state()
    assert state == BlockState(str(path), 4096, False, b"serial-1")
    with pytest.raises(ConfigError, match="another VM"):
        VirtioBlock.from_state(state)  # still open read-write here: locked
    disk.close()
    again = VirtioBlock.from_state(state)
    assert again.state() == state and again.fd >= 0
    again.close()


def test_block_restore_refuses_a_different_disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(8 * 512))
    disk = VirtioBlock(path)
    state = disk.state()
    disk.close()
    path.write_bytes(bytes(16 * 512))
    with pytest.raises(StateError, match="4096 in the snapshot"):
        VirtioBlock.from_state(state)
    VirtioBlock(path).close()  # the refused restore closed (and unlocked) its fd


# -- hostile records ------------------------------------------------------------------------


def good_state():
    mem, t, drv, queues = running_transport()
    return mem, t.state()


def with_queue(state, index=0, **fields):
    queues = list(state.queues)
    queues[index] = queues[index]._replace(**fields)
    return state._replace(queues=tuple(queues))


HOSTILE = {
    "queue size not a power of two": lambda s: with_queue(s, size=12),
    "queue size over its max": lambda s: with_queue(s, size=32),
    "queue size zero": lambda s: with_queue(s, size=0),
    "queue size over u32": lambda s: with_queue(s, ready=False, size=2**32),
    "descriptor table misaligned": lambda s: with_queue(s, desc_addr=0x1008),
    "used ring outside RAM": lambda s: with_queue(s, used_addr=RAM - 8),
    "ring address over u64": lambda s: with_queue(s, ready=False, avail_addr=2**64),
    "next_avail not u16": lambda s: with_queue(s, next_avail=0x10000),
    "next_used negative": lambda s: with_queue(s, next_used=-1),
    "too many in flight": lambda s: with_queue(s, next_avail=17, next_used=0),
    "signalled_used not u16": lambda s: with_queue(s, signalled_used=70000),
    "ready not a bool": lambda s: with_queue(s, ready=1),
    "queue record not a QueueState": lambda s: s._replace(queues=((16, True), s.queues[1])),
    "ring features not negotiated": lambda s: with_queue(s._replace(acked_features=VERSION_1, driver_features=VERSION_1), event_idx=True),
    "status with impossible bits": lambda s: s._replace(status=RUNNING | 0x10),
    "status over u8": lambda s: s._replace(status=0x100),
    "DRIVER_OK without FEATURES_OK": lambda s: s._replace(status=RUNNING & ~c.STATUS_FEATURES_OK),
    "DRIVER without ACKNOWLEDGE": lambda s: s._replace(status=c.STATUS_DRIVER),
    "queue_sel past the queues": lambda s: s._replace(queue_sel=3),
    "feature selector past 64 bits": lambda s: s._replace(device_features_sel=7),
    "interrupt_status unknown bits": lambda s: s._replace(interrupt_status=4),
    "config_generation over u32": lambda s: s._replace(config_generation=2**32),
    "acked features not offered": lambda s: s._replace(acked_features=s.acked_features | 1 << 3, driver_features=s.acked_features | 1 << 3),
    "acked features differ from the driver's": lambda s: s._replace(driver_features=VERSION_1),
    "acked features without FEATURES_OK": lambda s: s._replace(status=c.STATUS_ACKNOWLEDGE, queues=good_idle_queues(s)),
    "acked features without VERSION_1": lambda s: s._replace(acked_features=EVENT_IDX, driver_features=EVENT_IDX),
    "too few queues": lambda s: s._replace(queues=s.queues[:1]),
    "queues not a tuple": lambda s: s._replace(queues=list(s.queues)),
    "not a TransportState": lambda s: tuple(s),
    "float field": lambda s: s._replace(driver_features=float(s.driver_features)),
}


def good_idle_queues(state):
    return tuple(q._replace(event_idx=False, indirect=False) for q in state.queues)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_transport_record_refused(name):
    mem, state = good_state()
    hostile = HOSTILE[name](state)
    device = Echo()
    with pytest.raises(StateError) as info:
        VirtioMmioTransport.from_state(device, mem, InterruptLine(), hostile)
    message = str(info.value)
    assert "\n" not in message and message.startswith("virtio state: ")
    assert isinstance(info.value, ValueError) and info.value.exit_status == 2
    assert device.activations == []


@pytest.mark.parametrize(
    "state",
    [
        BlockState("", 512, False, b""),
        BlockState(b"/bytes/path", 512, False, b""),
        BlockState("/a\0b", 512, False, b""),
        BlockState("/x", 513, False, b""),
        BlockState("/x", -512, False, b""),
        BlockState("/x", 512, "no", b""),
        BlockState("/x", 512, False, b"x" * 21),
        BlockState("/x", 512, False, "text"),
        ("/x", 512, False, b""),
    ],
)
def test_hostile_block_record_refused(state):
    with pytest.raises(StateError):
        VirtioBlock.from_state(state)


def test_missing_disk_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        VirtioBlock.from_state(BlockState(str(tmp_path / "gone.img"), 512, False, b""))


# -- hypothesis: any record either restores to itself or is refused with StateError ------------

u = st.one_of(
    st.integers(0, 3),
    st.integers(0, 2**16 + 1),
    st.sampled_from([2**16 - 1, 2**32 - 1, 2**32, 2**64 - 1, 2**64, -1]),
    st.integers(-(2**70), 2**70),
)
junk = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=3), st.binary(max_size=3))
maybe_int = st.one_of(u, u, u, junk)
flags = st.one_of(st.booleans(), st.booleans(), st.booleans(), junk, st.integers(0, 1))
addresses = st.one_of(st.sampled_from([0x1000, 0x1100, 0x1120, 0x2000, 0x2080, 0x20A0]), maybe_int)
sizes = st.one_of(st.sampled_from([1, 2, 4, 8, 16, 32]), maybe_int)

QUEUE_FIELDS = {
    "size": sizes,
    "ready": flags,
    "desc_addr": addresses,
    "avail_addr": addresses,
    "used_addr": addresses,
    "next_avail": maybe_int,
    "next_used": maybe_int,
    "event_idx": flags,
    "indirect": flags,
    "signalled_used": st.one_of(st.none(), maybe_int),
}
features = st.one_of(
    st.sampled_from([0, VERSION_1, VERSION_1 | EVENT_IDX, VERSION_1 | EVENT_IDX | INDIRECT, EVENT_IDX]), maybe_int
)
TRANSPORT_FIELDS = {
    "status": st.one_of(st.sampled_from([0, 1, 3, 11, RUNNING, RUNNING | 0x40, 0x80, 0x40, 0x4F]), maybe_int),
    "device_features_sel": st.one_of(st.integers(0, 3), maybe_int),
    "driver_features_sel": st.one_of(st.integers(0, 3), maybe_int),
    "driver_features": features,
    "unknown_feature_bits": flags,
    "queue_sel": st.one_of(st.integers(0, 3), maybe_int),
    "interrupt_status": st.one_of(st.integers(0, 4), maybe_int),
    "config_generation": maybe_int,
    "acked_features": features,
}
# (which queue or None for the transport, field, value): a few at a time, so
# that many records stay valid and the restore path is exercised too.
mutation = st.one_of(
    st.sampled_from(sorted(TRANSPORT_FIELDS)).flatmap(lambda f: st.tuples(st.none(), st.just(f), TRANSPORT_FIELDS[f])),
    st.sampled_from(sorted(QUEUE_FIELDS)).flatmap(
        lambda f: st.tuples(st.integers(0, 1), st.just(f), QUEUE_FIELDS[f])
    ),
    st.tuples(st.none(), st.just("queues"), st.one_of(junk, st.just(()))),
)


def apply(state, mutations):
    for queue, field, value in mutations:
        if queue is None:
            state = state._replace(**{field: value})
        elif isinstance(state.queues, tuple) and len(state.queues) > queue:
            state = with_queue(state, queue, **{field: value})
    return state


def base_states():
    """Good records at several stages: fresh, negotiated with a ready queue, running with traffic."""
    mem = GuestMemory([(0, RAM)])
    fresh = VirtioMmioTransport(Echo(), mem, InterruptLine()).state()
    t = VirtioMmioTransport(Echo(), mem, InterruptLine())
    drv = MockDriver(t)
    drv.negotiate(features=VERSION_1 | EVENT_IDX)
    drv.setup_queue(0, MockQueue.at(mem, 0x1000, 16))
    negotiated = t.state()
    mem, t, drv, queues = running_transport()
    queues[1].add_chain([(DATA, 8, True)])
    drv.notify(1)
    return [fresh, negotiated, t.state()]


BASES = base_states()


@HYPOTHESIS
@given(base=st.sampled_from(BASES), mutations=st.lists(mutation, max_size=3))
def test_any_transport_record_restores_exactly_or_is_refused(base, mutations):
    state = apply(base, mutations)
    mem = GuestMemory([(0, RAM)])
    try:
        t = VirtioMmioTransport.from_state(Echo(), mem, InterruptLine(), state)
    except StateError as err:
        assert "\n" not in str(err)
        event("refused")
        return
    event("restored, running" if t.status & c.STATUS_DRIVER_OK else "restored")
    assert t.state() == state
    # A restored transport still answers the guest without raising.
    drv = MockDriver(t)
    for index in range(3):
        drv.notify(index)
    assert drv.rd(c.MMIO_MAGIC_VALUE) == c.MMIO_MAGIC


@HYPOTHESIS
@given(
    base=st.sampled_from([q for b in BASES for q in b.queues]),
    mutations=st.lists(st.sampled_from(sorted(QUEUE_FIELDS)).flatmap(lambda f: st.tuples(st.just(f), QUEUE_FIELDS[f])), max_size=3),
    max_size=st.sampled_from([1, 8, 16, 32768]),
)
def test_any_queue_record_restores_exactly_or_is_refused(base, mutations, max_size):
    state = base._replace(**dict(mutations))
    mem = GuestMemory([(0, RAM)])
    try:
        q = SplitQueue.from_state(mem, state, max_size)
    except StateError:
        event("refused")
        return
    event("restored, ready" if q.ready else "restored")
    assert q.state() == state
    if q.ready:
        assert q.size <= max_size and q.size & (q.size - 1) == 0


BLOCK_FIELDS = {
    "path": st.one_of(st.text(max_size=5), junk, st.just("/nonexistent/disk.img"), st.just("/dev/null")),
    "size": maybe_int,
    "read_only": flags,
    "disk_id": st.one_of(st.binary(max_size=24), junk),
}


@HYPOTHESIS
@given(
    mutations=st.lists(st.sampled_from(sorted(BLOCK_FIELDS)).flatmap(lambda f: st.tuples(st.just(f), BLOCK_FIELDS[f])), max_size=2)
)
def test_any_block_record_restores_exactly_or_is_refused(tmp_path_factory, mutations):
    image = tmp_path_factory.mktemp("d") / "disk.img"
    image.write_bytes(bytes(4096))
    state = BlockState(str(image), 4096, False, b"disk.img")._replace(**dict(mutations))
    try:
        disk = VirtioBlock.from_state(state)
    except ConfigError as err:  # StateError, or the file is missing / not a disk
        assert "\n" not in str(err)
        event("refused")
        return
    event("restored")
    try:
        assert disk.state() == state
    finally:
        disk.close()
