"""Step 3 of the collection pipeline: link the compiled collections into one :class:`CollectionSet`.

Before it: :mod:`.compile` made one :class:`~.model.Collection` per file.  :func:`build_set`
checks what no single file can: two collections with one title, a ``parent`` that names no
loaded collection, a child running in another direction than its parent, parent references that
form a cycle; it drops the collections that cannot run and orders the rest parents first
(``graphlib.TopologicalSorter``).  After it: :func:`engine.collection.load_collections` returns
the set in a :class:`~.model.LoadReport`, and the runner maps records through it.
"""

from __future__ import annotations

import difflib
from graphlib import CycleError, TopologicalSorter

from engine.collection.model import Collection, CollectionSet
from engine.errors import (
    DuplicateTitleError,
    KlaviyoSyncError,
    Location,
    ParentCycleError,
    ParentDirectionError,
    UnknownParentError,
)


def build_set(loaded: list[Collection]) -> tuple[CollectionSet, list[KlaviyoSyncError]]:
    """Link compiled collections by title and parent, parents first.

    Args:
        loaded: the collections that compiled, in file order.

    Returns:
        The set of those that can run (a duplicate title, an unknown parent or a cycle drops
        the collection concerned) and every problem found across files.
    """
    errors: list[KlaviyoSyncError] = []
    cs = CollectionSet()
    for c in loaded:
        if c.title in cs.collections:
            errors.append(DuplicateTitleError(
                f"title {c.title!r} is already used by {cs.collections[c.title].file}",
                location=Location(file=c.file, line=1, column=1)))
            continue
        cs.collections[c.title] = c
    graph = _parents(cs, errors)
    cs.order = _parents_first(cs, graph, errors)
    return cs, errors


def _parents(cs: CollectionSet, errors: list[KlaviyoSyncError]) -> dict[str, set[str]]:
    """Each collection's parent, as ``TopologicalSorter`` takes it; a child of an unknown parent is dropped."""
    graph: dict[str, set[str]] = {}
    for c in list(cs.collections.values()):
        if c.parent is None:
            graph.setdefault(c.title, set())
            continue
        if c.parent not in cs.collections:
            hint = difflib.get_close_matches(c.parent, sorted(cs.collections), n=1)
            msg = f"parent {c.parent!r} is not a loaded collection"
            msg += f"; did you mean {hint[0]!r}?" if hint else ""
            errors.append(UnknownParentError(msg, location=c.parent_location))
            del cs.collections[c.title]
            continue
        parent = cs.collections[c.parent]
        if parent.direction != c.direction:
            errors.append(ParentDirectionError(
                f"parent {c.parent!r} runs {parent.direction}, this child runs {c.direction}",
                location=c.parent_location))
        graph.setdefault(c.title, set()).add(c.parent)
    return graph


def _parents_first(cs: CollectionSet, graph: dict[str, set[str]], errors: list[KlaviyoSyncError]) -> list[str]:
    """The titles with every parent before its children; the collections of a cycle are dropped."""
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = exc.args[1]
        errors.append(ParentCycleError(
            "parent references form a cycle: " + " -> ".join(cycle),
            location=cs.collections[cycle[0]].parent_location))
        for t in set(cycle):
            cs.collections.pop(t, None)
            graph.pop(t, None)
        for deps in graph.values():
            deps.difference_update(cycle)
        order = list(TopologicalSorter(graph).static_order())
    return [t for t in order if t in cs.collections]


__all__ = ["build_set"]
