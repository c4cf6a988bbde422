"""Values derived from a features argument (kNN graphs, flags), cached against the tensor they came from.

Features are an argument of `represent`, never a buffer, so anything built from them must follow the
argument rather than be built once in `__init__`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TypeVar

from torch import Tensor

T = TypeVar("T")


class FeatureCache:
    """Values derived from a feature tensor (e.g. its kNN graph), rebuilt only for another tensor.

    Features are an argument of `represent`, so a graph built from them must follow the argument: it is
    cached per key against the identity and in-place version of the tensor it came from (a weak
    reference, so a freed tensor never matches a new one at the same address). The trainer passes the
    same tensors every step, so the graph is built once; a mean-ablated view is a new tensor and gets its
    own. Not part of the state dict: a loaded model rebuilds from the features it is given.
    """

    max_entries = 4

    def __init__(self) -> None:
        self._slots: dict[str, list[list]] = {}

    def get(self, key: str, tensor: Tensor, build: Callable[[Tensor], T], max_uses: int | None = None) -> T:
        """The value built from `tensor`; rebuilt for another tensor, or after `max_uses` returns of it.

        Each key keeps its `max_entries` most recently used tensors, so alternating between the training
        features and a counterfactual view (CKD does so every batch) does not rebuild the training graph.
        """
        slots = [s for s in self._slots.get(key, []) if s[0]() is not None]
        for slot in slots:
            if slot[0]() is tensor and slot[1] == tensor._version:
                slots.remove(slot)
                if max_uses is None or slot[3] < max_uses:
                    slot[3] += 1
                    self._slots[key] = [*slots, slot]
                    return slot[2]
                break
        value = build(tensor)
        self._slots[key] = [*slots, [weakref.ref(tensor), tensor._version, value, 1]][-self.max_entries :]
        return value

    def __getstate__(self) -> dict:  # weak references do not pickle; a copy starts empty
        return {"_slots": {}}
