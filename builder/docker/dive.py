"""Dive's image efficiency and wasted bytes, computed the way Dive 0.13 computes them.

CI pipelines gate images on Dive's numbers (`dive --ci`: lowestEfficiency 0.9,
highestUserWastedPercent 0.1), so `prewheel audit-image` must report the same numbers for the
same archive, quirks included (wagoodman/dive, dive/filetree/efficiency.go and
dive/image/analysis.go):

- each layer is a tree of its own entries; only its leaves are counted (a directory that has
  entries under it in that layer is not);
- per path over all layers: the sum of the sizes seen (cumulative) and the smallest one; a
  whiteout counts 0, or, when it deletes a directory, the sizes of everything under that
  directory in the layers below stacked; efficiency = sum of smallest / sum of cumulative;
- wasted bytes = the cumulative size of every path met in two layers or more (both copies
  of an overwritten file, and a deleted file whole); a directory deleted whole is not waste;
- user-wasted percent = wasted / the size of every layer but the first, a layer's size being
  the sum of its entries' header sizes;
- a whiteout of a path absent from the layers below stops the count of the rest of its layer
  (and leaves a record whose smallest size is -1), and opaque whiteouts (`.wh..wh..opq`) are
  ignored.

`audit` reports, beside these, what the image really hides, with overlay semantics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .archive import Entry

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh.."


class _Node:
    __slots__ = ("children", "is_dir", "name", "parent", "size")

    def __init__(self, name: str, parent: _Node | None, size: int = 0, is_dir: bool = False):
        self.name, self.parent, self.size, self.is_dir = name, parent, size, is_dir
        self.children: dict[str, _Node] = {}

    def copy(self, parent: _Node | None = None) -> _Node:
        out = _Node(self.name, parent, self.size, self.is_dir)
        out.children = {k: c.copy(out) for k, c in self.children.items()}
        return out

    def path(self) -> str:
        names = []
        node: _Node | None = self
        while node is not None and node.parent is not None:
            names.append(node.name.removeprefix(_WHITEOUT) if node is self else node.name)
            node = node.parent
        return "/" + "/".join(reversed(names))

    def child_first(self) -> list[_Node]:
        """This node's subtree, children before parents, names in byte order (Go's sort)."""
        out: list[_Node] = []
        stack: list[tuple[_Node, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                out.append(node)
                continue
            stack.append((node, True))
            for key in sorted(node.children, reverse=True):
                stack.append((node.children[key], False))
        return out


def _add_path(root: _Node, path: str, size: int, is_dir: bool) -> None:
    node = root
    names = [n for n in path.split("/") if n]
    for i, name in enumerate(names):
        child = node.children.get(name)
        if child is None:
            if name.startswith(_OPAQUE):
                return
            child = node.children[name] = _Node(name, node)
        node = child
        if i == len(names) - 1:
            node.size, node.is_dir = size, is_dir


def _get(root: _Node, path: str) -> _Node | None:
    node = root
    for name in path.strip("/").split("/"):
        if name:
            found = node.children.get(name)
            if found is None:
                return None
            node = found
    return node


def _stack(lower: _Node, upper: _Node) -> None:
    """Dive's FileTree.Stack: apply `upper`'s whiteouts and entries to `lower`, in place."""
    for node in upper.child_first():
        if node is upper:
            continue
        if node.name.startswith(_WHITEOUT):
            gone = _get(lower, node.path())
            if gone is not None and gone.parent is not None:
                del gone.parent.children[gone.name]
        else:
            _add_path(lower, node.path(), node.size, node.is_dir)


@dataclass(frozen=True, kw_only=True)
class Inefficiency:
    path: str
    count: int
    size: int  # cumulative: every copy counted


@dataclass(frozen=True, kw_only=True)
class DiveMeasures:
    efficiency: float
    wasted_bytes: int
    size: int
    user_size: int  # every layer but the first
    layer_sizes: tuple[int, ...]
    inefficiencies: tuple[Inefficiency, ...]  # largest first

    @property
    def user_wasted_percent(self) -> float:
        """A ratio (0.1 is 10 %), as Dive's rule reads it; with no user bytes, NaN or
        infinity, as Dive's float division gives."""
        if self.user_size:
            return self.wasted_bytes / self.user_size
        return math.nan if self.wasted_bytes == 0 else math.inf


def dive_measures(layers: Sequence[Sequence[Entry]]) -> DiveMeasures:
    trees = []
    sizes = []
    for entries in layers:
        root = _Node("", None)
        for e in entries:
            _add_path(root, e.path, e.size, e.kind == "dir")
        trees.append(root)
        sizes.append(sum(e.size for e in entries))
    cumulative: dict[str, int] = {}
    smallest: dict[str, int] = {}
    counts: dict[str, int] = {}
    stacked = trees[0].copy() if trees else _Node("", None)  # StackTreeRange(0, i - 1)
    for tree in trees:
        for node in tree.child_first():
            if node is tree or node.children:
                continue
            path = node.path()
            size = node.size
            if node.name.startswith(_WHITEOUT):
                below = _get(stacked, path)
                if below is None:
                    # Dive's visitor has already made the path's record (no size, smallest
                    # -1) when it errors out; the rest of the layer goes uncounted.
                    cumulative.setdefault(path, 0)
                    smallest.setdefault(path, -1)
                    break
                size = sum(n.size for n in below.child_first()) if below.is_dir else 0
            cumulative[path] = cumulative.get(path, 0) + size
            smallest[path] = min(smallest.get(path, size), size)
            counts[path] = counts.get(path, 0) + 1
        _stack(stacked, tree)
    total = sum(cumulative.values())
    waste = sorted(
        (Inefficiency(path=p, count=n, size=cumulative[p]) for p, n in counts.items() if n > 1),
        key=lambda x: (-x.size, x.path),
    )
    return DiveMeasures(
        efficiency=sum(smallest.values()) / total if total else 1.0,
        wasted_bytes=sum(x.size for x in waste),
        size=sum(sizes),
        user_size=sum(sizes[1:]),
        layer_sizes=tuple(sizes),
        inefficiencies=tuple(waste),
    )
