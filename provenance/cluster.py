"""Clusters from verified pairs, without chaining.

Components come from a union-find over verified pairs; inside each component members are
taken in canonical order and each joins the first centre it is itself similar to (star
clustering), so a template shared along a chain A~B~C cannot put A and C together unless
A~C holds too.
"""

from __future__ import annotations

from typing import Callable, Hashable, Iterable, Sequence


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Hashable, Hashable] = {}

    def find(self, item: Hashable) -> Hashable:
        parent = self.parent.setdefault(item, item)
        if parent != item:
            root = self.find(parent)
            self.parent[item] = root
            return root
        return item

    def union(self, a: Hashable, b: Hashable) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            if repr(root_a) < repr(root_b):
                self.parent[root_b] = root_a
            else:
                self.parent[root_a] = root_b

    def groups(self) -> list[list[Hashable]]:
        out: dict[Hashable, list[Hashable]] = {}
        for item in list(self.parent):
            out.setdefault(self.find(item), []).append(item)
        return list(out.values())


def components(pairs: Iterable[tuple[Hashable, Hashable]]) -> list[list[Hashable]]:
    forest = UnionFind()
    for a, b in pairs:
        forest.union(a, b)
    return forest.groups()


def star_clusters(
    members: Sequence[Hashable],
    similarity: Callable[[Hashable, Hashable], float],
    threshold: float,
) -> list[tuple[Hashable, list[tuple[Hashable, float]]]]:
    """Split ``members`` (already in canonical order) into (centre, [(member, sim)]) stars."""
    stars: list[tuple[Hashable, list[tuple[Hashable, float]]]] = []
    for member in members:
        for centre, joined in stars:
            value = similarity(member, centre)
            if value >= threshold:
                joined.append((member, value))
                break
        else:
            stars.append((member, []))
    return [(centre, joined) for centre, joined in stars if joined]
