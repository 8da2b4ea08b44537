"""Index of the free address ranges of an address space: the search behind VirtualAlloc.

VirtualAlloc without a base address must find the lowest (or, with MEM_TOP_DOWN, the highest)
aligned hole that fits, and a long-running sample can fragment the space into tens of thousands
of holes. A sorted list would make every search linear in the number of holes, so the free
ranges live in a treap keyed by start address, each node also carrying the longest free range
in its subtree. A search can then skip every subtree that cannot hold the request and only walk
the few paths that can, which keeps all operations O(log n) in the number of free ranges.

Free ranges are kept coalesced (no two touch), so "wholly inside one free range" is the same as
"wholly free", and a range never has more than one free neighbour on each side.
"""

from __future__ import annotations

import random

from ..errors import ConflictingAddressesError, InvalidParameterError


class _Node:
    """One free range [start, end) plus the treap links and the subtree's longest range."""

    __slots__ = ("start", "end", "prio", "left", "right", "maxlen")

    def __init__(self, start: int, end: int, prio: float) -> None:
        self.start = start
        self.end = end
        self.prio = prio
        self.left: _Node | None = None
        self.right: _Node | None = None
        self.maxlen = end - start


def _pull(node: _Node) -> _Node:
    """Recompute ``maxlen`` from the children; every structural change must call this bottom-up."""
    best = node.end - node.start
    left, right = node.left, node.right
    if left is not None and left.maxlen > best:
        best = left.maxlen
    if right is not None and right.maxlen > best:
        best = right.maxlen
    node.maxlen = best
    return node


def _split(node: _Node | None, key: int) -> tuple[_Node | None, _Node | None]:
    """Split into (starts < key, starts >= key). Recursion depth is the treap depth, O(log n)."""
    if node is None:
        return None, None
    if node.start < key:
        lower, upper = _split(node.right, key)
        node.right = lower
        return _pull(node), upper
    lower, upper = _split(node.left, key)
    node.left = upper
    return lower, _pull(node)


def _merge(lower: _Node | None, upper: _Node | None) -> _Node | None:
    """Join two treaps where every start in ``lower`` is below every start in ``upper``."""
    if lower is None:
        return upper
    if upper is None:
        return lower
    if lower.prio > upper.prio:
        lower.right = _merge(lower.right, upper)
        return _pull(lower)
    upper.left = _merge(lower, upper.left)
    return _pull(upper)


def _check_range(start: int, end: int) -> None:
    """An empty or inverted range is a caller bug, not an address conflict, so say so."""
    if start >= end:
        raise InvalidParameterError(f"empty or inverted range [{start:#x}, {end:#x})")


class FreeRangeIndex:
    """Free address ranges inside [lo, hi): the free-range search behind VirtualAlloc."""

    __slots__ = ("_lo", "_hi", "_root", "_count", "_rng")

    def __init__(self, lo: int, hi: int) -> None:
        if not 0 <= lo <= hi:
            raise InvalidParameterError(f"bad address space [{lo:#x}, {hi:#x})")
        self._lo = lo
        self._hi = hi
        # A private, fixed-seed generator keeps the tree shape reproducible across runs (and
        # snapshots) and independent of whoever else reseeds the global ``random`` module.
        self._rng = random.Random(0x5EED)
        self._root: _Node | None = None
        self._count = 0
        if lo < hi:
            self._insert(lo, hi)

    # -- public API ----------------------------------------------------------------------------

    def reserve(self, start: int, end: int) -> None:
        """Mark [start, end) used; it must lie wholly inside one free range."""
        _check_range(start, end)
        node = self._floor(start)
        if node is None or node.end < end:
            raise ConflictingAddressesError(f"[{start:#x}, {end:#x}) is not wholly free")
        old_start, old_end = node.start, node.end
        if start == old_start and end == old_end:
            self._remove(old_start)
        elif start == old_start:
            # Moving a start inside its own gap keeps key order, so no rebalancing is needed.
            node.start = end
            self._repull(end)
        else:
            node.end = start
            self._repull(old_start)
            if end < old_end:
                self._insert(end, old_end)

    def release(self, start: int, end: int) -> None:
        """Mark [start, end) free again, coalescing with free neighbours.

        The range must be wholly used: freeing free memory means the caller's bookkeeping is
        wrong, and silently accepting it would hide the bug until two allocations overlap.
        """
        _check_range(start, end)
        if start < self._lo or end > self._hi:
            raise InvalidParameterError(
                f"[{start:#x}, {end:#x}) is outside [{self._lo:#x}, {self._hi:#x})"
            )
        before = self._floor(end - 1)
        if before is not None and before.end > start:
            raise InvalidParameterError(f"[{start:#x}, {end:#x}) is partly free already")
        after = self._find(end)
        if before is not None and before.end == start:
            if after is not None:
                before.end = after.end
                self._remove(after.start)
            else:
                before.end = end
            self._repull(before.start)
        elif after is not None:
            after.start = start
            self._repull(start)
        else:
            self._insert(start, end)

    def is_free(self, start: int, end: int) -> bool:
        """Whether all of [start, end) is free (ranges are coalesced, so one lookup suffices)."""
        _check_range(start, end)
        node = self._floor(start)
        return node is not None and node.end >= end

    def find_first(
        self, size: int, alignment: int, min_address: int, max_address: int
    ) -> int | None:
        """Lowest aligned ``a >= min_address`` with [a, a+size) free and ``a+size <= max_address``.

        In-order walk that never enters a subtree whose longest range is shorter than ``size``
        nor one wholly outside the window. A range of length >= size + alignment - 1 always
        fits; shorter ones are checked exactly, so the cost is O((1 + k) log n) where k counts
        the ranges long enough but misaligned that precede the answer (none when holes start on
        the alignment, as reservations on the allocation granularity do).
        """
        _check_query(size, alignment)
        lo, hi = max(min_address, self._lo), min(max_address, self._hi)
        if hi - lo < size:
            return None
        stack: list[_Node] = []
        cur = self._root
        while True:
            while cur is not None and cur.maxlen >= size:
                stack.append(cur)
                cur = cur.left if cur.start > lo else None
            if not stack:
                return None
            node = stack.pop()
            if node.start >= hi:
                return None
            addr = -(-max(node.start, lo) // alignment) * alignment
            if addr + size <= min(node.end, hi):
                return addr
            cur = node.right if node.end < hi else None

    def find_last(
        self, size: int, alignment: int, min_address: int, max_address: int
    ) -> int | None:
        """Highest address ``find_first`` would accept: the MEM_TOP_DOWN search, mirrored."""
        _check_query(size, alignment)
        lo, hi = max(min_address, self._lo), min(max_address, self._hi)
        if hi - lo < size:
            return None
        stack: list[_Node] = []
        cur = self._root
        while True:
            while cur is not None and cur.maxlen >= size:
                stack.append(cur)
                cur = cur.right if cur.end < hi else None
            if not stack:
                return None
            node = stack.pop()
            if node.end <= lo:
                return None
            addr = (min(node.end, hi) - size) // alignment * alignment
            if addr >= max(node.start, lo):
                return addr
            cur = node.left if node.start > lo else None

    def ranges(self) -> list[tuple[int, int]]:
        """All free ranges in address order (iterative, so deep trees cannot overflow)."""
        out: list[tuple[int, int]] = []
        stack: list[_Node] = []
        cur = self._root
        while stack or cur is not None:
            while cur is not None:
                stack.append(cur)
                cur = cur.left
            node = stack.pop()
            out.append((node.start, node.end))
            cur = node.right
        return out

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"FreeRangeIndex([{self._lo:#x}, {self._hi:#x}), {self._count} free ranges)"

    # -- treap plumbing ------------------------------------------------------------------------

    def _floor(self, key: int) -> _Node | None:
        """The range with the greatest start <= key: the only one that can contain ``key``."""
        best: _Node | None = None
        cur = self._root
        while cur is not None:
            if cur.start <= key:
                best = cur
                cur = cur.right
            else:
                cur = cur.left
        return best

    def _find(self, start: int) -> _Node | None:
        cur = self._root
        while cur is not None and cur.start != start:
            cur = cur.right if start > cur.start else cur.left
        return cur

    def _path(self, start: int) -> list[_Node]:
        """Root-to-node path to the range starting at ``start`` (which must exist)."""
        path: list[_Node] = []
        cur = self._root
        while cur is not None:
            path.append(cur)
            if cur.start == start:
                return path
            cur = cur.right if start > cur.start else cur.left
        raise AssertionError(f"no free range starts at {start:#x}")  # pragma: no cover

    def _repull(self, start: int) -> None:
        """Refresh ``maxlen`` on the path after a range was resized in place."""
        for node in reversed(self._path(start)):
            _pull(node)

    def _insert(self, start: int, end: int) -> None:
        new = _Node(start, end, self._rng.random())
        path: list[_Node] = []
        cur = self._root
        while cur is not None and cur.prio > new.prio:
            path.append(cur)
            cur = cur.right if start > cur.start else cur.left
        new.left, new.right = _split(cur, start)
        _pull(new)
        self._attach(path, start, new)
        self._count += 1

    def _remove(self, start: int) -> None:
        path = self._path(start)
        node = path.pop()
        self._attach(path, start, _merge(node.left, node.right))
        self._count -= 1

    def _attach(self, path: list[_Node], key: int, sub: _Node | None) -> None:
        """Hang ``sub`` in the slot the node keyed ``key`` occupies, refresh ``maxlen`` upward."""
        if not path:
            self._root = sub
            return
        parent = path[-1]
        if key > parent.start:
            parent.right = sub
        else:
            parent.left = sub
        for node in reversed(path):
            _pull(node)


def _check_query(size: int, alignment: int) -> None:
    """Zero sizes or alignments have no meaningful answer; reject them like Windows does."""
    if size < 1 or alignment < 1:
        raise InvalidParameterError(f"bad search size {size:#x} or alignment {alignment:#x}")
