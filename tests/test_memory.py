"""gptlearn.fast.memory: large CPU tensors reuse memory instead of fresh pages from the kernel, and memory is
never handed out twice while something still holds it."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch


FAULTS_SCRIPT = """
import resource, sys, torch
from gptlearn.fast.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
def faults_for_a_fresh_100mb_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(25 * 2**20)  # 100 MB, written once
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    del t
    return after - before
# warm up: the heap may need a second 100 MB block (the thread pool starting on the first fill can place
# a small allocation right after the first block, which then no longer fits a new aligned request)
for _ in range(4):
    faults_for_a_fresh_100mb_tensor()
print(sum(faults_for_a_fresh_100mb_tensor() for _ in range(4)))  # four more, after the warm-up
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator setting")
def test_keep_freed_memory_reuses_pages_instead_of_faulting_in_fresh_ones(tmp_path):
    """By default every new 100 MB tensor faults in ~25,600 fresh 4 KB pages; after keep_freed_memory()
    and a warm-up, new ones reuse the memory of those freed before them."""
    script = tmp_path / "faults.py"
    script.write_text(FAULTS_SCRIPT)

    def faults(mode: str) -> int:
        r = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert r.returncode == 0, r.stderr[-2000:]
        return int(r.stdout.strip().splitlines()[-1])

    default, kept = faults("default"), faults("keep")
    assert default > 4 * 20_000  # the premise: fresh pages every time
    assert kept < 2_000, (default, kept)


# ---- empty_reused: large outputs reuse memory nobody holds any more ------------------------------
def test_empty_reused_hands_memory_out_again_only_when_nothing_holds_it(small_pool):
    d = small_pool
    shape = (64, 256)  # 64 KB of fp32
    a = d.empty_reused(shape)
    assert a.shape == shape and a.dtype == torch.float32 and a.is_contiguous()
    first = a.data_ptr()
    a.fill_(1.0)
    view = a[10:20]  # a view keeps the memory in use after the tensor itself is gone
    del a
    b = d.empty_reused(shape)
    assert b.data_ptr() != first
    b.fill_(2.0)
    assert bool((view == 1.0).all())
    arr = view.numpy()  # so does a NumPy array of it
    del view
    c = d.empty_reused(shape)
    assert c.data_ptr() not in (first, b.data_ptr())
    c.fill_(3.0)
    assert (arr == 1.0).all()
    del arr
    again = d.empty_reused(shape)  # now the first block is free
    assert again.data_ptr() == first
    assert d.empty_reused((32, 256)).data_ptr() not in (first, b.data_ptr(), c.data_ptr())  # sizes must match


def test_empty_reused_leaves_small_and_huge_tensors_to_torch(small_pool):
    d = small_pool
    t = d.empty_reused((16,))  # 64 bytes: below the threshold
    assert not d.reused_blocks() and t.untyped_storage().resizable()
    big = d.empty_reused((1 << 19,))  # 2 MB: above the cap
    assert not d.reused_blocks() and big.shape == (1 << 19,)
    other = d.empty_reused((64, 256), device="meta")  # another device (here torch's shape-only one)
    assert not d.reused_blocks() and other.device.type == "meta" and other.shape == (64, 256)
    pooled = d.empty_reused((1024,), torch.bfloat16)
    assert len(d.reused_blocks()) == 1 and pooled.dtype == torch.bfloat16 and not pooled.untyped_storage().resizable()


def test_empty_reused_forgets_the_oldest_beyond_its_cap_without_freeing_tensors_in_use(small_pool):
    d = small_pool
    held = [d.empty_reused((64, 1024)).fill_(i) for i in range(5)]  # 5 x 256 KB held, cap 1 MB
    assert sum(d.reused_blocks()) <= d.REUSE_MAX_BYTES
    assert len({t.data_ptr() for t in held}) == 5
    assert all(bool((t == i).all()) for i, t in enumerate(held))  # the forgotten ones are still intact
    d.release_reused()
    assert not d.reused_blocks() and bool((held[0] == 0).all())


def test_empty_reused_never_gives_two_threads_the_same_memory(small_pool):
    d = small_pool
    errors = []

    def work(k: int) -> None:
        try:
            for _ in range(200):
                t = d.empty_reused((16, 64))
                t.fill_(k)
                t.add_(0)  # a little time between the write and the check
                if not bool((t == k).all()):
                    errors.append(k)
        except Exception as e:  # noqa: BLE001  (a thread's exception would not fail the test by itself)
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
