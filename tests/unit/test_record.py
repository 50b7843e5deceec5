"""vmm.record: the same named tuple types as collections.namedtuple, cheaper to make."""

import copy
import pickle
from collections import namedtuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmm.record import Record, record

Pair = record("Pair", "left right", defaults=(0,))


def outcome(call):
    """What a call gives: ("ok", value) or the exception's type."""
    try:
        return "ok", call()
    except (TypeError, ValueError) as err:
        return type(err)


names = st.lists(st.sampled_from(["a", "b", "c", "dd", "e1", "f_g", "h", "kk"]), min_size=1, max_size=6, unique=True)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), fields=names)
def test_behaves_as_namedtuple(data, fields):
    defaults = tuple(data.draw(st.lists(st.integers(), max_size=len(fields))))
    ours, theirs = record("T", fields, defaults=defaults), namedtuple("T", fields, defaults=defaults)
    assert (ours._fields, ours._field_defaults, ours.__match_args__) == (theirs._fields, theirs._field_defaults, theirs.__match_args__)
    arg_names = st.sampled_from([*fields, "zz"])
    args = tuple(data.draw(st.lists(st.integers(), max_size=len(fields) + 1)))
    kwargs = data.draw(st.dictionaries(arg_names, st.integers(), max_size=3))
    mine, other = outcome(lambda: ours(*args, **kwargs)), outcome(lambda: theirs(*args, **kwargs))
    if not isinstance(mine, tuple):
        assert mine == other
        return
    a, b = mine[1], other[1]
    assert isinstance(a, Record) and isinstance(a, tuple)
    assert a == b and tuple(a) == tuple(b) and hash(a) == hash(b)
    assert repr(a) == repr(b) and a._asdict() == b._asdict()
    assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]
    changes = data.draw(st.dictionaries(arg_names, st.integers(), max_size=3))
    replaced = outcome(lambda: a._replace(**changes))
    assert (replaced if not isinstance(replaced, tuple) else replaced[1]) == \
        (lambda r: r if not isinstance(r, tuple) else r[1])(outcome(lambda: b._replace(**changes)))
    items = data.draw(st.lists(st.integers(), max_size=len(fields) + 1))
    made, their_made = outcome(lambda: ours._make(items)), outcome(lambda: theirs._make(items))
    assert (made[1] if isinstance(made, tuple) else made) == (their_made[1] if isinstance(their_made, tuple) else their_made)


def test_pickles_copies_and_keeps_its_module():
    pair = Pair(1, right=2)
    assert Pair.__module__ == __name__
    assert pickle.loads(pickle.dumps(pair)) == pair and type(pickle.loads(pickle.dumps(pair))) is Pair
    assert copy.copy(pair) == pair and copy.deepcopy(pair) == pair
    assert Pair(5) == (5, 0) and Pair(5).right == 0


def test_a_subclass_keeps_its_own_methods():
    class Point(record("Point", "x y")):
        __slots__ = ()

        def norm1(self):
            return abs(self.x) + abs(self.y)

    point = Point(3, -4)
    assert point.norm1() == 7 and repr(point) == "Point(x=3, y=-4)" and point._replace(x=0).norm1() == 4
    assert type(point._replace(x=0)) is Point and not hasattr(point, "__dict__")


@pytest.mark.parametrize("fields", ["a a", "_a", "a-b", "1x", "a class"])
def test_bad_field_names_are_refused(fields):
    with pytest.raises(ValueError):
        record("T", fields)
