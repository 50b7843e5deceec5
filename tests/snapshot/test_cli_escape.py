from vmm.console import EscapeFilter


def test_ctrl_a_s_asks_for_a_snapshot():
    assert EscapeFilter().feed(b"ab\x01sc") == (b"abc", ["snapshot"])
