"""The indexed binary heap of the fast EMD solver. Runs with or without numba (without it, as plain Python)."""

from __future__ import annotations

import numpy as np

from xaiutils.domain import emd_fast


def test_heap_pops_keys_in_order_after_inserts_and_key_decreases():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 40))
        key = rng.random(n)
        heap, position, size = np.zeros(n, np.int64), np.full(n, -1, np.int64), 0
        for node in range(n):
            size = emd_fast._heap_push(heap, position, size, key, node)
        for node in rng.choice(n, n // 2, replace=False):  # lower some keys of nodes already in the heap
            key[node] -= rng.random()
            size = emd_fast._heap_push(heap, position, size, key, node)
        assert size == n
        popped = []
        while size:
            top, size = emd_fast._heap_pop(heap, position, size, key)
            assert position[top] == -1
            popped.append(key[top])
        assert popped == sorted(key.tolist())
