"""How much memory there is, on any operating system: free now, in all, and this process's peak."""
import sys

import psutil


def available():
    """Bytes free now, reclaimable caches counted (psutil's `available`); None if unknown."""
    try:
        return psutil.virtual_memory().available
    except (OSError, RuntimeError, NotImplementedError):
        return None


def total():
    """Bytes of memory the machine has; None if unknown."""
    try:
        return psutil.virtual_memory().total
    except (OSError, RuntimeError, NotImplementedError):
        return None


def peak():
    """This process's peak resident bytes: the kernel's own count where it keeps one
    (ru_maxrss: KiB on Linux, bytes on macOS; peak_wset on Windows), else the memory now."""
    try:
        import resource
    except ImportError:  # Windows
        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss)
    most = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return most if sys.platform == "darwin" else most * 1024
