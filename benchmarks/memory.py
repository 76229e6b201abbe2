"""Peak memory of a block of code: the CUDA allocator's peak on GPU; on CPU the kernel's resident-set
high-water mark (``VmHWM``), reset at the start of the block through ``/proc/self/clear_refs`` so that an
earlier peak (imports, a previous measurement) never hides the block's own."""
from __future__ import annotations

import re
import resource
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_cpu_peak() -> bool:
    """True when the kernel's high-water mark could be reset (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def resident_bytes() -> int:
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_resident_bytes() -> int:
    kib = _status_kib("VmHWM")
    return kib * 1024 if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """``with PeakMemory(device) as mem: ...`` then ``mem.peak`` (bytes in use at the block's peak),
    ``mem.growth`` (bytes above the start of the block) and ``mem.mb`` (growth in MiB)."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.exact = _reset_cpu_peak()
            self.base = resident_bytes()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = max(peak_resident_bytes(), resident_bytes())

    @property
    def growth(self) -> int:
        return max(self.peak - self.base, 0)

    @property
    def mb(self) -> float:
        return self.growth / 2 ** 20
