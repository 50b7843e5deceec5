"""Named tuple types, without namedtuple's cost to make one.

collections.namedtuple compiles a ``__new__`` for every type it makes (with
eval): ~0.1 ms each here, and a `vmm exec` or `vmm run` defines a dozen such
types before its VM starts (~1.4 ms). ``record()`` makes the same kind of type
(a tuple subclass with fields by name and by index, ``_fields``,
``_field_defaults``, ``_make``, ``_replace``, ``_asdict``, the same repr,
equality, hashing and pickling) from one shared ``__new__`` that binds its
arguments itself. tests/unit/test_record.py holds it to namedtuple's behaviour.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from keyword import iskeyword

try:
    from _collections import _tuplegetter  # what namedtuple's fields are made of
except ImportError:  # another Python: the same, slower
    from operator import itemgetter

    def _tuplegetter(index: int, doc: str):
        return property(itemgetter(index), doc=doc)


class Record(tuple):
    """The base of every record type: see record()."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _field_defaults: dict[str, object] = {}

    def __new__(cls, *args, **kwargs):
        if kwargs or len(args) != len(cls._fields):
            args = cls._bind(args, kwargs)
        return tuple.__new__(cls, args)

    @classmethod
    def _bind(cls, args: tuple, kwargs: dict) -> list:
        fields, name = cls._fields, cls.__name__
        if len(args) > len(fields):
            raise TypeError(f"{name}() takes {len(fields)} positional arguments but {len(args)} were given")
        values = list(args)
        for field in fields[len(args) :]:
            if field in kwargs:
                values.append(kwargs.pop(field))
            elif field in cls._field_defaults:
                values.append(cls._field_defaults[field])
            else:
                raise TypeError(f"{name}() missing required argument: {field!r}")
        for extra in kwargs:
            why = "got multiple values for argument" if extra in fields else "got an unexpected keyword argument"
            raise TypeError(f"{name}() {why} {extra!r}")
        return values

    @classmethod
    def _make(cls, iterable: Iterable):
        made = tuple.__new__(cls, iterable)
        if len(made) != len(cls._fields):
            raise TypeError(f"Expected {len(cls._fields)} arguments, got {len(made)}")
        return made

    def _replace(self, **changes):
        made = self._make(map(changes.pop, self._fields, self))
        if changes:
            raise ValueError(f"Got unexpected field names: {list(changes)!r}")
        return made

    def _asdict(self) -> dict:
        return dict(zip(self._fields, self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{name}={value!r}' for name, value in zip(self._fields, self))})"

    def __getnewargs__(self) -> tuple:
        return tuple(self)


def record(typename: str, field_names: str | Iterable[str], *, defaults: Iterable = ()) -> type:
    """A named tuple type, as ``collections.namedtuple(typename, field_names,
    defaults=defaults)`` makes it (field names: a space- or comma-separated
    string, or a sequence of names)."""
    if isinstance(field_names, str):
        field_names = field_names.replace(",", " ").split()
    fields = tuple(map(str, field_names))
    defaults = tuple(defaults)
    for field in fields:
        if not field.isidentifier() or iskeyword(field) or field.startswith("_"):
            raise ValueError(f"{typename}: field names must be identifiers, not keywords, not starting with _: {field!r}")
    if len(set(fields)) != len(fields):
        raise ValueError(f"{typename}: a field name is given twice in {fields}")
    if len(defaults) > len(fields):
        raise TypeError(f"{typename}: more default values than fields")
    namespace = {
        "__slots__": (),
        "__doc__": f"{typename}({', '.join(fields)})",
        "__match_args__": fields,
        "_fields": fields,
        "_field_defaults": dict(zip(fields[len(fields) - len(defaults) :], defaults)),
    }
    for index, field in enumerate(fields):
        namespace[field] = _tuplegetter(index, f"Alias for field number {index}")
    made = type(typename, (Record,), namespace)
    made.__module__ = sys._getframe(1).f_globals.get("__name__", "__main__")  # for pickle, as namedtuple does
    return made
