"""Index of the free address ranges of an address space: the search behind VirtualAlloc.

VirtualAlloc without a base address must find the lowest (or, with MEM_TOP_DOWN, the highest)
aligned hole that fits, and a long-running sample fragments the space into 10^5 holes. The free
ranges live in a treap keyed by start address (coalesced: no two touch, so "wholly inside one
free range" is the same as "wholly free").

**What the search prunes by.** Each node carries, for its subtree, the largest *aligned
capacity* ``end - align_up(start, a)``: how long a request aligned to ``a`` can be and still fit
in the range. A request of ``size`` aligned to ``a`` fits in [start, end) exactly when that
capacity is >= ``size`` (for MEM_TOP_DOWN too: ``align_down(end - size) >= start`` is the same
condition), so a subtree whose capacity is >= ``size`` always holds an answer and one whose
capacity is smaller never does. The search therefore walks one root-to-leaf path plus the two
paths of the window edges: O(log n) for any size. The longest *length* is not enough: a 4 KiB
reservation leaves the rest of its 64 KiB granule free, a hole longer than the next 4 KiB
request but with no 64 KiB-aligned start in it, and with 10^5 such holes a length-pruned search
visits every one of them (measured in docs/design.md).

**Which alignments.** Capacity depends on the alignment, so it is kept per *alignment class*:
the index's ``granularity`` (64 KiB for an address space: every VirtualAlloc without an
explicit alignment) always, plus up to ``EXTRA_CLASSES`` more, registered the first time a
search asks for them (an O(n) pass) and afterwards kept up to date by every change. When a
further class is needed the least recently used extra one gives way. Every search is exact;
only a program alternating among more than ``1 + EXTRA_CLASSES`` alignments pays the O(n)
pass repeatedly.
"""

from __future__ import annotations

import random

from ..errors import ConflictingAddressesError, InvalidParameterError

EXTRA_CLASSES = 2  # alignment classes kept besides the granularity (1 MiB, 2 MiB, … in practice)
_CAP_NAMES = ("cap", "cap1", "cap2")  # node attribute of class slot -1, 0, 1


class _Node:
    """One free range [start, end), treap links and subtree maxima of aligned capacity.

    ``cap``: the subtree's largest capacity for the index's granularity; ``cap1``/``cap2``:
    the same for the index's extra alignment classes (0 while unused). Scalars, not a list:
    every change refreshes them along a path, and a list per node made that 3x slower.
    """

    __slots__ = ("start", "end", "prio", "left", "right", "cap", "cap1", "cap2")

    def __init__(self, start: int, end: int, prio: float) -> None:
        self.start = start
        self.end = end
        self.prio = prio
        self.left: _Node | None = None
        self.right: _Node | None = None
        self.cap = 0
        self.cap1 = 0
        self.cap2 = 0


class _Treap:
    """The treap plumbing; ``mask`` is ``granularity - 1``, ``extra`` the extra classes."""

    __slots__ = ("mask", "extra")

    def __init__(self, granularity: int) -> None:
        self.mask = granularity - 1
        self.extra: list[int] = []

    def repull(self, node: _Node) -> bool:
        """Recompute the subtree maxima from the children (every change does, bottom-up);
        says whether one changed: if not, no ancestor's did either."""
        start, end = node.start, node.end
        mask = self.mask
        best = end - ((start + mask) & ~mask)
        left, right = node.left, node.right
        if left is not None and left.cap > best:
            best = left.cap
        if right is not None and right.cap > best:
            best = right.cap
        changed = best != node.cap
        node.cap = best
        if self.extra:
            extra = self.extra
            a = extra[0]
            best = end - -(-start // a) * a
            if left is not None and left.cap1 > best:
                best = left.cap1
            if right is not None and right.cap1 > best:
                best = right.cap1
            changed = changed or best != node.cap1
            node.cap1 = best
            if len(extra) > 1:
                a = extra[1]
                best = end - -(-start // a) * a
                if left is not None and left.cap2 > best:
                    best = left.cap2
                if right is not None and right.cap2 > best:
                    best = right.cap2
                changed = changed or best != node.cap2
                node.cap2 = best
        return changed

    def split(self, node: _Node | None, key: int) -> tuple[_Node | None, _Node | None]:
        """Split into (starts < key, starts >= key). Recursion depth is the treap depth."""
        if node is None:
            return None, None
        if node.start < key:
            lower, upper = self.split(node.right, key)
            node.right = lower
            self.repull(node)
            return node, upper
        lower, upper = self.split(node.left, key)
        node.left = upper
        self.repull(node)
        return lower, node

    def merge(self, lower: _Node | None, upper: _Node | None) -> _Node | None:
        """Join two treaps where every start in ``lower`` is below every start in ``upper``."""
        if lower is None:
            return upper
        if upper is None:
            return lower
        if lower.prio > upper.prio:
            lower.right = self.merge(lower.right, upper)
            self.repull(lower)
            return lower
        upper.left = self.merge(lower, upper.left)
        self.repull(upper)
        return upper


def _check_range(start: int, end: int) -> None:
    """An empty or inverted range is a caller bug, not an address conflict, so say so."""
    if start >= end:
        raise InvalidParameterError(f"empty or inverted range [{start:#x}, {end:#x})")


class FreeRangeIndex:
    """Free address ranges inside [lo, hi): the free-range search behind VirtualAlloc.

    ``granularity`` (a power of two) is the alignment searched fastest: the address space
    passes the 64 KiB allocation granularity.
    """

    __slots__ = ("_lo", "_hi", "_root", "_count", "_rng", "_t", "_granularity", "_lru", "_hint")

    def __init__(self, lo: int, hi: int, granularity: int = 1) -> None:
        if not 0 <= lo <= hi:
            raise InvalidParameterError(f"bad address space [{lo:#x}, {hi:#x})")
        if granularity < 1 or granularity & (granularity - 1):
            raise InvalidParameterError(f"granularity {granularity:#x} is not a power of two")
        self._lo = lo
        self._hi = hi
        self._granularity = granularity
        self._t = _Treap(granularity)
        self._lru: list[int] = []  # extra classes, least recently searched first
        # A private, fixed-seed generator keeps the tree shape reproducible across runs (and
        # snapshots) and independent of whoever else reseeds the global ``random`` module.
        self._rng = random.Random(0x5EED)
        self._root: _Node | None = None
        self._count = 0
        #: root-to-node path of the range the last fast search answered from; any change to
        #: the tree drops it (reserve and release clear it first)
        self._hint: list[_Node] | None = None
        if lo < hi:
            self._insert(lo, hi)

    # -- public API ----------------------------------------------------------------------------

    def reserve(self, start: int, end: int) -> None:
        """Mark [start, end) used; it must lie wholly inside one free range."""
        _check_range(start, end)
        hint, self._hint = self._hint, None
        if hint is not None and hint[-1].start <= start < hint[-1].end:
            path, at = hint, len(hint) - 1  # the range the last search answered from
        else:
            path, at, _ = self._descend(start)
        if at < 0 or path[at].end < end:
            raise ConflictingAddressesError(f"[{start:#x}, {end:#x}) is not wholly free")
        node = path[at]
        del path[at + 1 :]
        old_start, old_end = node.start, node.end
        if start == old_start and end == old_end:
            self._remove(path)
            return
        if start == old_start:
            # Moving a start inside its own gap keeps key order, so no rebalancing is needed.
            node.start = end
        else:
            node.end = start
        self._repull_path(path)
        if start != old_start and end < old_end:
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
        self._hint = None
        # One descent finds both neighbours: the free range before (the floor of end - 1) and
        # the one after (its successor), which can only start at ``end`` or later.
        path, at_before, at_after = self._descend(end - 1)
        before = path[at_before] if at_before >= 0 else None
        if before is not None and before.end > start:
            raise InvalidParameterError(f"[{start:#x}, {end:#x}) is partly free already")
        if before is not None and before.end != start:
            before = None
        after = path[at_after] if at_after >= 0 and path[at_after].start == end else None
        if before is not None and after is not None:
            # Both neighbours merge into one range. They are adjacent in key order, so one is
            # the other's ancestor and both lie on the path: drop the deeper, widen the other.
            if at_before < at_after:
                before.end = after.end
                keep, drop = at_before, at_after
            else:
                after.start = before.start
                keep, drop = at_after, at_before
            self._remove(path[: drop + 1])
            self._repull_path(path[: keep + 1], force=True)
        elif before is not None:
            before.end = end
            self._repull_path(path[: at_before + 1])
        elif after is not None:
            after.start = start
            self._repull_path(path[: at_after + 1])
        else:
            self._insert(start, end)

    def is_free(self, start: int, end: int) -> bool:
        """Whether all of [start, end) is free (ranges are coalesced, so one lookup suffices)."""
        _check_range(start, end)
        path, at, _ = self._descend(start)
        return at >= 0 and path[at].end >= end

    def find_first(
        self, size: int, alignment: int, min_address: int, max_address: int
    ) -> int | None:
        """Lowest aligned ``a >= min_address`` with [a, a+size) free and ``a+size <= max_address``.

        Only the range holding ``min_address`` can be cut by the window; every other
        candidate starts above it: the nodes the search path for ``min_address`` leaves to
        the left and their right subtrees, in address order from the bottom of the path up.
        The first of those whose own capacity (or whose subtree's) is >= ``size`` holds the
        answer, found by one more descent: O(log n) in all. The path to the answer is kept
        for the ``reserve`` that usually follows.
        """
        _check_query(size, alignment)
        lo, hi = max(min_address, self._lo), min(max_address, self._hi)
        if hi - lo < size:
            return None
        slot = self._class_slot(alignment)
        name = _CAP_NAMES[slot + 1]
        path, at, _ = self._descend(lo)
        if at >= 0:  # the range holding lo, if any, cut at lo
            node = path[at]
            addr = -(-lo // alignment) * alignment
            if addr + size <= node.end:
                if addr + size > hi:
                    return None
                del path[at + 1 :]
                self._hint = path
                return addr
        for i in range(len(path) - 1, -1, -1):
            node = path[i]
            if node.start <= lo:
                continue  # went right here: nothing of it lies above lo
            if (node.cap if slot < 0 else getattr(node, name)) < size:
                continue  # nothing in its subtree fits (an ancestor's other side may)
            addr = -(-node.start // alignment) * alignment
            if addr + size <= node.end:
                del path[i + 1 :]
                break
            right = node.right
            if right is not None and (right.cap if slot < 0 else getattr(right, name)) >= size:
                del path[i + 1 :]
                addr = self._leftmost_fit(right, size, alignment, slot, path)
                break
        else:
            return None
        if addr + size > hi:
            return None  # the lowest fit above lo ends past the window: so does every other
        self._hint = path
        return addr

    def find_last(
        self, size: int, alignment: int, min_address: int, max_address: int
    ) -> int | None:
        """Highest address ``find_first`` would accept: the MEM_TOP_DOWN search, mirrored
        (the search path is the one for ``max_address - 1``)."""
        _check_query(size, alignment)
        lo, hi = max(min_address, self._lo), min(max_address, self._hi)
        if hi - lo < size:
            return None
        slot = self._class_slot(alignment)
        name = _CAP_NAMES[slot + 1]
        path, _, _ = self._descend(hi - 1)
        for i in range(len(path) - 1, -1, -1):
            node = path[i]
            if node.start > hi - 1:
                continue  # went left here: nothing of it lies below hi
            if (node.cap if slot < 0 else getattr(node, name)) < size:
                continue
            addr = (min(node.end, hi) - size) // alignment * alignment
            if addr >= node.start:
                del path[i + 1 :]
                break
            left = node.left
            if left is not None and (left.cap if slot < 0 else getattr(left, name)) >= size:
                del path[i + 1 :]
                addr = self._rightmost_fit(left, size, alignment, slot, path)
                break
        else:
            return None
        if addr < lo:
            return None
        self._hint = path
        return addr

    def _leftmost_fit(
        self, node: _Node, size: int, alignment: int, slot: int, path: list[_Node]
    ) -> int:
        """Lowest fit in the subtree of ``node``, whose capacity is >= size; extends ``path``."""
        name = _CAP_NAMES[slot + 1]
        while True:
            path.append(node)
            left = node.left
            if left is not None and (left.cap if slot < 0 else getattr(left, name)) >= size:
                node = left
                continue
            addr = -(-node.start // alignment) * alignment
            if addr + size <= node.end:
                return addr
            node = node.right  # type: ignore[assignment]  # holds the fit: capacities are exact

    def _rightmost_fit(
        self, node: _Node, size: int, alignment: int, slot: int, path: list[_Node]
    ) -> int:
        """Highest fit in the subtree of ``node``, whose capacity is >= size; extends ``path``."""
        name = _CAP_NAMES[slot + 1]
        while True:
            path.append(node)
            right = node.right
            if right is not None and (right.cap if slot < 0 else getattr(right, name)) >= size:
                node = right
                continue
            addr = (node.end - size) // alignment * alignment
            if addr >= node.start:
                return addr
            node = node.left  # type: ignore[assignment]  # holds the fit: capacities are exact

    def ranges(self) -> list[tuple[int, int]]:
        """All free ranges in address order (iterative, so deep trees cannot overflow)."""
        return [(node.start, node.end) for node in self._nodes()]

    @property
    def granularity(self) -> int:
        return self._granularity

    @property
    def alignment_classes(self) -> tuple[int, ...]:
        """Alignments the subtree capacities are kept for: the granularity, then the extras."""
        return (self._granularity, *self._t.extra)

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"FreeRangeIndex([{self._lo:#x}, {self._hi:#x}), {self._count} free ranges)"

    # -- alignment classes ---------------------------------------------------------------------

    def _class_slot(self, alignment: int) -> int:
        """-1 for the granularity, else the extra slot (0 or 1) of ``alignment``'s class.

        A class seen for the first time is registered (one O(n) pass over the tree); past
        ``EXTRA_CLASSES`` it takes the slot of the least recently searched one.
        """
        if alignment == self._granularity:
            return -1
        extra, lru = self._t.extra, self._lru
        if alignment in extra:
            if lru[-1] != alignment:
                lru.remove(alignment)
                lru.append(alignment)
            return extra.index(alignment)
        if len(extra) < EXTRA_CLASSES:
            extra.append(alignment)
        else:
            victim = lru.pop(0)
            extra[extra.index(victim)] = alignment
        lru.append(alignment)
        self._recompute()
        return extra.index(alignment)

    def _recompute(self) -> None:
        """Refresh every node's maxima bottom-up (post-order, iterative)."""
        repull = self._t.repull
        for node in reversed(self._preorder()):
            repull(node)

    # -- treap plumbing ------------------------------------------------------------------------

    def _nodes(self) -> list[_Node]:
        """Nodes in address order."""
        out: list[_Node] = []
        stack: list[_Node] = []
        cur = self._root
        while stack or cur is not None:
            while cur is not None:
                stack.append(cur)
                cur = cur.left
            node = stack.pop()
            out.append(node)
            cur = node.right
        return out

    def _preorder(self) -> list[_Node]:
        """Nodes with every parent before its children."""
        out: list[_Node] = []
        stack = [self._root] if self._root is not None else []
        while stack:
            node = stack.pop()
            out.append(node)
            if node.left is not None:
                stack.append(node.left)
            if node.right is not None:
                stack.append(node.right)
        return out

    def _descend(self, key: int) -> tuple[list[_Node], int, int]:
        """The search path for ``key`` from the root, with the positions on it of the range
        with the greatest start <= key (the only one that can contain ``key``) and of the one
        with the least start > key; -1 where there is none."""
        path: list[_Node] = []
        floor = succ = -1
        cur = self._root
        while cur is not None:
            if cur.start <= key:
                floor = len(path)
                path.append(cur)
                cur = cur.right
            else:
                succ = len(path)
                path.append(cur)
                cur = cur.left
        return path, floor, succ

    def _insert(self, start: int, end: int) -> None:
        new = _Node(start, end, self._rng.random())
        path: list[_Node] = []
        cur = self._root
        while cur is not None and cur.prio > new.prio:
            path.append(cur)
            cur = cur.right if start > cur.start else cur.left
        new.left, new.right = self._t.split(cur, start)
        self._t.repull(new)
        self._attach(path, start, new)
        self._count += 1

    def _remove(self, path: list[_Node]) -> None:
        """Unlink the last node of the root-to-node ``path`` (the list is consumed)."""
        node = path.pop()
        self._attach(path, node.start, self._t.merge(node.left, node.right))
        self._count -= 1

    def _attach(self, path: list[_Node], key: int, sub: _Node | None) -> None:
        """Hang ``sub`` in the slot the node keyed ``key`` occupies, refresh maxima upward."""
        if not path:
            self._root = sub
            return
        parent = path[-1]
        if key > parent.start:
            parent.right = sub
        else:
            parent.left = sub
        self._repull_path(path)

    def _repull_path(self, path: list[_Node], *, force: bool = False) -> None:
        """Refresh maxima bottom-up along a root-to-node path whose last node (or the subtree
        below it) changed, stopping where nothing changes any more. ``force``: the last node
        is refreshed whatever it reports (its subtree changed after its own last refresh)."""
        repull = self._t.repull
        for node in reversed(path):
            if not repull(node) and not force:
                return
            force = False


def _check_query(size: int, alignment: int) -> None:
    """Zero sizes or alignments have no meaningful answer; reject them like Windows does."""
    if size < 1 or alignment < 1:
        raise InvalidParameterError(f"bad search size {size:#x} or alignment {alignment:#x}")
