"""Firecracker's REST API subset: a request in, a call on the instance, an answer out.

``parse()`` is pure: it checks the method, the path and the JSON body against
Firecracker's shapes (required fields, types, no unknown or duplicate fields,
as its serde structs with deny_unknown_fields refuse them) and returns an
``Action``; ``handle()`` runs the action on an instance (vmm/api/instance.py)
and turns its result or its error into ``(status, body)``. Errors use
Firecracker's wording where it has one, and its body: ``{"fault_message": ...}``.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from ..errors import VmmError
from ..log import get_logger
from .http import ApiRequest, fault_body

log = get_logger("vmm.api")

DESERIALIZE = "An error occurred when deserializing the json body of a request"
POST_BOOT = "The requested operation is not supported after starting the microVM."
PRE_BOOT = "The requested operation is not supported before starting the microVM."


class ApiError(Exception):
    """A request refused with ``status`` and a one-line ``fault_message``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Action(NamedTuple):
    name: str  # the instance method to call
    args: dict


# --- JSON bodies -----------------------------------------------------------------
_MISSING = object()


def _shown(name: str) -> str:
    """A client's field name for a one-line message: JSON-escaped (with its
    first 60 characters) if it holds a newline or another unprintable character."""
    return name if name.isprintable() and len(name) <= 60 else json.dumps(name[:60])[1:-1]


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ApiError(f"{DESERIALIZE}: duplicate field `{_shown(key)}`.")
        seen[key] = value
    return seen


def _reject_constant(name):
    raise ApiError(f"{DESERIALIZE}: {name} is not a JSON number.")


def _json_object(body: bytes) -> dict:
    try:
        # Decoded here: json.loads would guess UTF-16 or UTF-32 from bytes; the API speaks UTF-8.
        value = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except ApiError:
        raise
    except UnicodeDecodeError:
        raise ApiError(f"{DESERIALIZE}: the body is not UTF-8.") from None
    except json.JSONDecodeError as err:
        raise ApiError(f"{DESERIALIZE}: {err.msg} at line {err.lineno} column {err.colno}.") from None
    except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise ApiError(f"{DESERIALIZE}: a number has too many digits.") from None
    except RecursionError:
        raise ApiError(f"{DESERIALIZE}: nested too deeply.") from None
    if not isinstance(value, dict):
        raise ApiError(f"{DESERIALIZE}: expected a JSON object.")
    return value


def _type_name(kind) -> str:
    return {bool: "a boolean", int: "an unsigned integer", str: "a string", dict: "an object"}[kind]


def _fields(body: bytes, required: dict, optional: dict | None = None) -> dict:
    """The body's fields, each checked for its type; ``optional`` maps a name to
    (type, default)."""
    obj = _json_object(body)
    optional = optional or {}
    known = list(required) + list(optional)
    for key in obj:
        if key not in required and key not in optional:
            raise ApiError(f"{DESERIALIZE}: unknown field `{_shown(key)}`, expected one of {', '.join(f'`{k}`' for k in known)}.")
    out = {}
    for name, kind in required.items():
        if name not in obj:
            raise ApiError(f"{DESERIALIZE}: missing field `{name}`.")
        out[name] = _typed(name, obj[name], kind)
    for name, (kind, default) in optional.items():
        value = obj.get(name, _MISSING)
        out[name] = default if value is _MISSING or value is None else _typed(name, value, kind)
    return out


def _typed(name: str, value: Any, kind):
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if ok and kind is int and value < 0:
        ok = False
    if not ok:
        raise ApiError(f"{DESERIALIZE}: invalid value for `{name}`: expected {_type_name(kind)}, got {json.dumps(value)[:40]}.")
    if kind is str and "\0" in value:
        raise ApiError(f"{DESERIALIZE}: `{name}` contains a NUL character.")
    return value


def _enum(name: str, value: str, choices: tuple) -> str:
    if value not in choices:
        shown = json.dumps(value)[:40]
        raise ApiError(f"{DESERIALIZE}: unknown variant {shown} for `{name}`, expected one of {', '.join(f'`{c}`' for c in choices)}.")
    return value


def _checked_id(drive_id: str | None) -> str:
    if not drive_id:
        raise ApiError("The ID cannot be empty.")
    if not all(c == "_" or c.isalnum() for c in drive_id):
        raise ApiError("API Resource IDs can only contain alphanumeric characters and underscores.")
    return drive_id


# --- one parser per endpoint ---------------------------------------------------------
MACHINE_CONFIG_FIELDS = {"vcpu_count": int, "mem_size_mib": int}
MACHINE_CONFIG_OPTIONAL = {"smt": (bool, False), "track_dirty_pages": (bool, False)}


def _put_machine_config(body, tokens):
    return Action("put_machine_config", _fields(body, MACHINE_CONFIG_FIELDS, MACHINE_CONFIG_OPTIONAL))


def _patch_machine_config(body, tokens):
    optional = {name: (kind, None) for name, kind in MACHINE_CONFIG_FIELDS.items()}
    optional.update({name: (kind, None) for name, (kind, _) in MACHINE_CONFIG_OPTIONAL.items()})
    fields = _fields(body, {}, optional)
    return Action("patch_machine_config", {k: v for k, v in fields.items() if v is not None})


def _put_boot_source(body, tokens):
    return Action(
        "put_boot_source",
        _fields(body, {"kernel_image_path": str}, {"boot_args": (str, None), "initrd_path": (str, None)}),
    )


def _put_drive(body, tokens):
    path_id = _checked_id(next(tokens, None))
    fields = _fields(
        body,
        {"drive_id": str, "is_root_device": bool},
        {"path_on_host": (str, None), "is_read_only": (bool, False), "partuuid": (str, None), "cache_type": (str, "Unsafe")},
    )
    if fields["drive_id"] != path_id:
        raise ApiError("The id from the path does not match the id from the body!")
    if fields["path_on_host"] is None:
        raise ApiError(f"{DESERIALIZE}: missing field `path_on_host`.")
    _enum("cache_type", fields["cache_type"], ("Unsafe", "Writeback"))
    if fields["partuuid"] is not None:
        raise ApiError("partuuid is not supported: the root device is always /dev/vda.")
    del fields["partuuid"], fields["cache_type"]
    return Action("put_drive", fields)


ACTIONS = {"InstanceStart": "start", "SendCtrlAltDel": "send_ctrl_alt_del", "FlushMetrics": "flush_metrics"}


def _put_actions(body, tokens):
    fields = _fields(body, {"action_type": str})
    return Action(ACTIONS[_enum("action_type", fields["action_type"], tuple(ACTIONS))], {})


def _patch_vm(body, tokens):
    state = _enum("state", _fields(body, {"state": str})["state"], ("Paused", "Resumed"))
    return Action("pause" if state == "Paused" else "resume", {})


def _put_snapshot(body, tokens):
    which = next(tokens, None)
    if which == "create":
        fields = _fields(body, {"snapshot_path": str, "mem_file_path": str}, {"snapshot_type": (str, "Full"), "version": (str, None)})
        _enum("snapshot_type", fields["snapshot_type"], ("Full", "Diff"))
        del fields["version"]  # accepted and ignored, as Firecracker does since 1.5
        return Action("create_snapshot", fields)
    if which == "load":
        fields = _fields(
            body,
            {"snapshot_path": str},
            {
                "mem_backend": (dict, None),
                "mem_file_path": (str, None),  # deprecated by Firecracker, still accepted
                "enable_diff_snapshots": (bool, False),
                "track_dirty_pages": (bool, False),
                "resume_vm": (bool, False),
            },
        )
        mem_path = _mem_backend(fields["mem_backend"], fields["mem_file_path"])
        return Action("load_snapshot", {"snapshot_path": fields["snapshot_path"], "mem_path": mem_path, "resume_vm": fields["resume_vm"]})
    raise ApiError(f"Invalid request method and/or path: PUT snapshot/{which or ''}.")


def _mem_backend(backend: dict | None, mem_file_path: str | None) -> str:
    if backend is not None and mem_file_path is not None:
        raise ApiError("Too many fields provided. Either `mem_backend` or `mem_file_path` should be present.")
    if backend is None:
        if mem_file_path is None:
            raise ApiError("Missing mandatory memory backend parameter: `mem_backend`.")
        return mem_file_path
    fields = _fields(json.dumps(backend).encode(), {"backend_type": str, "backend_path": str})
    if _enum("backend_type", fields["backend_type"], ("File", "Uffd")) != "File":
        raise ApiError("The Uffd memory backend is not supported: use backend_type File.")
    return fields["backend_path"]


def _put_metrics(body, tokens):
    return Action("put_metrics", _fields(body, {"metrics_path": str}))


def _put_serial(body, tokens):
    return Action("put_serial", _fields(body, {"serial_out_path": str}))


_GET = {"": "get_info", "machine-config": "get_machine_config"}
_PUT = {
    "actions": _put_actions,
    "boot-source": _put_boot_source,
    "drives": _put_drive,
    "machine-config": _put_machine_config,
    "metrics": _put_metrics,
    "serial": _put_serial,
    "snapshot": _put_snapshot,
}
_PATCH = {"machine-config": _patch_machine_config, "vm": _patch_vm}


def _path(target: str) -> str:
    """The absolute path of a request target, without a query (origin form or absolute form)."""
    if target.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return target.split("?", 1)[0].split("#", 1)[0]


def parse(request: ApiRequest) -> Action:
    """The action a request asks for; ApiError if Firecracker's API would refuse it."""
    path = _path(request.target)
    tokens = iter([t for t in path.lstrip("/").split("/")] if path.strip("/") else [""])
    first = next(tokens)
    method, body = request.method, request.body
    if method == "GET":
        if first in _GET and (first != "" or path in ("/", "")):
            if body is not None:
                raise ApiError("GET request cannot have a body.")
            return Action(_GET[first], {})
    elif method == "PUT" and first in _PUT:
        if body is None:
            raise ApiError("Empty PUT request.")
        return _PUT[first](body, tokens)
    elif method == "PATCH" and first in _PATCH:
        if body is None:
            raise ApiError("Empty PATCH request.")
        return _PATCH[first](body, tokens)
    raise ApiError(f"Invalid request method and/or path: {method} {first}.")


def handle(instance, request: ApiRequest) -> tuple[int, bytes | None]:
    """Run ``request`` on ``instance``: (status, JSON body or None for 204)."""
    try:
        action = parse(request)
        result = getattr(instance, action.name)(**action.args)
    except ApiError as err:
        return err.status, fault_body(str(err))
    except VmmError as err:  # ConfigError and the like: the user's request could not be carried out
        return 400, fault_body(str(err))
    except Exception as err:  # a VMM bug: answered, logged, and the VM goes on
        log.debug("API request %s %s failed", request.method, request.target, exc_info=True)
        return 500, fault_body(f"Internal error: {err!r}")
    if result is None:
        return 204, None
    return 200, json.dumps(result).encode()
