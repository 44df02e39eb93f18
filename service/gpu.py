"""Whether this host has an NVIDIA GPU that CUDA can use, asked of the driver's own library (libcuda)
rather than of onnxruntime or torch: on a host without a GPU, their attempt to load CUDA prints a dozen
loader errors (missing cuBLAS, cuRAND, an install link) that say nothing about the host. Shared by the
service (service/runtime.py) and the trainer (trainer/train.py)."""

from __future__ import annotations

import ctypes
import sys
from functools import cache

# The CUDA driver API library the NVIDIA driver installs (the container toolkit mounts it into containers).
DRIVER = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
CUDA_SUCCESS = 0


@cache
def problem() -> str | None:
    """Why CUDA cannot run here (no driver, a driver that does not start, no device), or None if the driver
    sees a GPU. Asked once per process: the answer does not change while it runs."""
    try:
        driver = ctypes.CDLL(DRIVER)
    except OSError as exc:
        return f"no NVIDIA driver ({exc})"
    status = driver.cuInit(0)
    if status != CUDA_SUCCESS:
        return f"the NVIDIA driver cannot start CUDA (cuInit: {_error_name(driver, status)})"
    count = ctypes.c_int(0)
    status = driver.cuDeviceGetCount(ctypes.byref(count))
    if status != CUDA_SUCCESS:
        return f"the NVIDIA driver cannot count its GPUs (cuDeviceGetCount: {_error_name(driver, status)})"
    if count.value == 0:
        return "the NVIDIA driver sees no GPU"
    return None


def _error_name(driver: ctypes.CDLL, status: int) -> str:
    """CUDA_ERROR_NO_DEVICE and the like, from the driver itself; the number if it has no name for it."""
    name = ctypes.c_char_p()
    if driver.cuGetErrorName(status, ctypes.byref(name)) != CUDA_SUCCESS or not name.value:
        return f"error {status}"
    return name.value.decode(errors="replace")
