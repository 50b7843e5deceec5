from vmm.console import EscapeFilter


def test_plain_bytes_pass_through():
    assert EscapeFilter().feed(b"ls\r") == (b"ls\r", [])


def test_ctrl_a_x_quits_and_drops_the_rest():
    assert EscapeFilter().feed(b"ab\x01xcd") == (b"ab", ["quit"])


def test_escape_split_across_reads():
    f = EscapeFilter()
    assert f.feed(b"a\x01") == (b"a", [])
    assert f.feed(b"x") == (b"", ["quit"])


def test_literal_ctrl_a_and_help_and_unknown():
    f = EscapeFilter()
    assert f.feed(b"\x01\x01") == (b"\x01", [])
    assert f.feed(b"\x01a") == (b"\x01", [])
    assert f.feed(b"\x01h") == (b"", ["help"])
    assert f.feed(b"\x01z") == (b"\x01z", [])
