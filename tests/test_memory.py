"""The C heap (stylecore/heap.py): freed memory is reused without the kernel
refilling its pages, and handed back when asked."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest
import torch

from stylecore import heap, memory

MB = 1 << 20


@pytest.fixture(autouse=True)
def glibc():
    if not heap.keep_freed_memory():
        pytest.skip("not glibc: nothing to tune")
    yield
    heap.keep_freed_memory(False)  # glibc's way again, for the tests that follow


# 8 rounds of what an optimization's steps do: the same large block allocated, filled
# and freed. Prints the pages the kernel had to fill (minor faults) meanwhile.
ROUNDS = """
import resource, sys, torch
from stylecore import heap, memory
if sys.argv[1] == "keep":
    heap.keep_freed_memory()
block = torch.ones(64 << 20, dtype=torch.uint8); del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    block = torch.ones(64 << 20, dtype=torch.uint8); del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def fresh_pages(mode: str) -> int:
    run = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return int(run.stdout)


def test_freed_blocks_are_reused_without_fresh_pages():
    """glibc's default gives each 64 MB block back and takes a fresh one: 16384 pages
    to fill every round. Kept, most rounds reuse the last one's pages (not every round:
    the heap's layout, or the kernel reclaiming idle pages, can make a round miss)."""
    assert fresh_pages("keep") < fresh_pages("default") / 2


def test_released_memory_leaves_the_process():
    block = torch.ones(256 * MB, dtype=torch.uint8)
    del block
    kept = memory.resident_bytes()
    heap.release_freed_memory()
    assert memory.resident_bytes() < kept - 200 * MB


@pytest.mark.parametrize("fails", [False, True])
def test_heap_kept_only_within_its_block(monkeypatch, fails):
    calls: list[bool] = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda keep=True: calls.append(keep) or True)
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
        with heap.heap_kept(True):
            assert calls == [True]
            if fails:
                raise RuntimeError("a cancelled level")
    assert calls == [True, False]


def test_heap_kept_only_while_every_running_level_keeps(monkeypatch):
    """Two jobs at once (a server's workers): a tiled level, which must not run beside a
    kept heap, turns keeping off until it ends; the whole level's end does not end the
    other's keeping."""
    calls: list[bool] = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda keep=True: calls.append(keep) or True)
    with heap.heap_kept(True):
        assert calls[-1] is True
        with heap.heap_kept(False):
            assert calls[-1] is False
        assert calls[-1] is True  # the tiled level ended; the whole one keeps again
        with heap.heap_kept(True):
            assert calls[-1] is True
        assert calls[-1] is True  # one of two keeping levels ended: the other still keeps
    assert calls[-1] is False
