"""Runtime helpers: the allocator setting of googlenet train and benchmark."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch

from googlenet.runtime import keep_freed_memory

# ------------------------------------------------------------------- allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_keep_freed_memory_serves_large_tensors_from_the_heap():
    """Without it glibc maps tensors over 32 MB from the kernel (above the heap's end) and unmaps them on free."""
    assert keep_freed_memory()
    sbrk = ctypes.CDLL("libc.so.6").sbrk
    sbrk.restype = ctypes.c_void_p
    big = torch.empty(64 * 2**20 // 4)  # 64 MB: beyond any mmap threshold glibc allows
    assert big.data_ptr() < sbrk(0)  # inside the heap, below its current end
