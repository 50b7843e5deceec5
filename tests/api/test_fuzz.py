"""Fuzzing the request path: random and mutated bytes through the HTTP layer
and the routes (a fake VM behind them). Every input gets a well-formed HTTP
answer (never a 500: that would be a VMM bug) or needs more bytes; nothing raises."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmm.api.http import ApiRequest, HttpConnection, ProtocolFailure, fault_body
from vmm.api.instance import ApiInstance
from vmm.api.routes import handle

from .fakes import FakeVm

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PATHS = ["/", "/machine-config", "/boot-source", "/drives/rootfs", "/drives/", "/actions", "/vm", "/snapshot/create",
         "/snapshot/load", "/snapshot/", "/metrics", "/serial", "/logger", "/mmds", "/%00", "/" + "a" * 300]
METHODS = ["GET", "PUT", "PATCH", "POST", "DELETE", "HEAD", "OPTIONS", "get", "PUT "]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(["vcpu_count", "mem_size_mib", "smt", "kernel_image_path", "boot_args", "initrd_path", "drive_id",
                               "path_on_host", "is_root_device", "is_read_only", "action_type", "state", "snapshot_type",
                               "snapshot_path", "mem_file_path", "mem_backend", "backend_type", "backend_path", "resume_vm",
                               "metrics_path", "serial_out_path"]) | st.text(max_size=8)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.dictionaries(field_names, json_values, max_size=6).map(lambda d: json.dumps(d).encode()),
)


def answer_all(conn: HttpConnection, instance) -> list[bytes]:
    answers = []
    while True:
        request = conn.next_request()
        if request is None:
            return answers
        if isinstance(request, ProtocolFailure):
            assert 400 <= request.status < 600
            answers.append(conn.respond(request.status, fault_body(request.message)))
            return answers
        status, body = handle(instance, request)
        assert status != 500, (request, body)
        if status >= 400:
            assert list(json.loads(body)) == ["fault_message"]
        answers.append(conn.respond(status, body))


def check_answers(answers):
    for out in answers:
        assert out.startswith(b"HTTP/1.1 ")
        assert b"\r\n\r\n" in out


class FuzzInstance(ApiInstance):
    """A fake VM (InstanceStart "boots" at once), and no file the fuzzer names is created."""

    def put_metrics(self, metrics_path):
        self.metrics_path = metrics_path

    def put_serial(self, serial_out_path):
        self.serial_out_path = serial_out_path


def instance():
    return FuzzInstance("fuzz", microvm_factory=FakeVm, output_fd=-1)


@FUZZ
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_random_bytes_in_random_pieces(data, cuts):
    conn, inst = HttpConnection(), instance()
    answers = []
    last = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        conn.receive(data[last:cut])
        last = max(last, cut)
        answers += answer_all(conn, inst)
    conn.receive(b"")
    answers += answer_all(conn, inst)
    check_answers(answers)


@FUZZ
@given(
    method=st.sampled_from(METHODS) | st.text(max_size=8),
    path=st.sampled_from(PATHS) | st.text(max_size=30).map(lambda t: "/" + t),
    headers=st.lists(st.tuples(st.sampled_from(["Content-Type", "Accept", "Expect", "Connection", "X-Any"]), st.text(max_size=30)), max_size=4),
    body=bodies,
    chunked=st.booleans(),
)
def test_structured_requests(method, path, headers, body, chunked):
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    raw = head.encode("utf-8", "surrogateescape")
    if body is not None:
        if chunked:
            raw += b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        else:
            raw += b"Content-Length: %d\r\n\r\n" % len(body) + body
    else:
        raw += b"\r\n"
    conn = HttpConnection()
    conn.receive(raw)
    check_answers(answer_all(conn, instance()))



def _put(path: str, body: bytes) -> bytes:
    return b"PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)


VALID = [
    _put("/machine-config", b'{"vcpu_count": 1, "mem_size_mib": 128}'),
    _put("/drives/root", b'{"drive_id":"root","path_on_host":"/r","is_root_device":true,"x":1}'),
    b"PATCH /vm HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n12\r\n{\"state\":\"Paused\"}\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
]


@FUZZ
@given(
    base=st.sampled_from(VALID),
    edits=st.lists(st.tuples(st.integers(min_value=0, max_value=200), st.sampled_from(["flip", "insert", "delete"]), st.binary(min_size=1, max_size=3)), max_size=6),
    repeat=st.integers(min_value=1, max_value=3),
)
def test_mutated_valid_requests(base, edits, repeat):
    data = bytearray(base * repeat)
    for pos, kind, extra in edits:
        pos %= len(data) + 1
        if kind == "insert":
            data[pos:pos] = extra
        elif kind == "delete":
            del data[pos : pos + len(extra)]
        elif pos < len(data):
            data[pos] ^= extra[0] or 1
    conn = HttpConnection()
    conn.receive(bytes(data))
    answers = answer_all(conn, instance())
    conn.receive(b"")
    answers += answer_all(conn, instance())
    check_answers(answers)


def test_every_valid_sample_is_accepted():
    inst = instance()
    for raw in VALID[:1] + VALID[3:]:
        conn = HttpConnection()
        conn.receive(raw)
        request = conn.next_request()
        assert isinstance(request, ApiRequest)
        assert handle(inst, request)[0] in (200, 204)
