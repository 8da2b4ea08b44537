"""Random sequences of Unicorn memory calls, plain Unicorn vs Unicorn + MemoryManager.

Hypothesis draws map/unmap/protect/read/write calls over a small window of pages (so
they overlap, split and run into holes); both engines must answer every call the same way
(result or UcError code) and end with the same mem_regions() and bytes.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from uc_diff import MODES, Probe

BASE = 0x100000
PAGES = 12

page = st.integers(0, PAGES - 1)
count = st.integers(0, 4)
# write-only, execute-only and write+execute pages are readable with the manager (x86 and
# Windows cannot express them; test_unicorn_api_windows.py checks that table)
perms = st.sampled_from([0, 1, 3, 5, 7])
call = st.one_of(
    st.tuples(st.just("mem_map"), page, st.integers(1, 4), perms),
    st.tuples(st.just("mem_unmap"), page, count),
    st.tuples(st.just("mem_protect"), page, count, perms),
    st.tuples(st.just("mem_read"), st.integers(0, PAGES * 0x1000 - 1), st.integers(1, 0x1800)),
    st.tuples(st.just("mem_write"), st.integers(0, PAGES * 0x1000 - 1), st.binary(min_size=1, max_size=64)),
)


def replay(calls: list[tuple[Any, ...]], mode: int, managed: bool) -> list[tuple[Any, ...]]:
    p = Probe(mode, managed)
    for name, *args in calls:
        if name in ("mem_map", "mem_unmap", "mem_protect"):
            p.call(name, BASE + args[0] * 0x1000, args[1] * 0x1000, *args[2:])
        elif name == "mem_read":
            p.call(name, BASE + args[0], args[1])
        else:
            p.call(name, BASE + args[0], args[1])
    return p.finish()


@settings(max_examples=150, deadline=None)
@given(calls=st.lists(call, min_size=1, max_size=25), wide=st.booleans())
def test_random_call_sequences_match_plain_unicorn(calls: list[tuple[Any, ...]], wide: bool) -> None:
    mode = MODES["x64" if wide else "x86"]
    assert replay(calls, mode, managed=True) == replay(calls, mode, managed=False)
