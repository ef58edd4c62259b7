"""A benchmark process's own peak RSS."""
import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: ``VmHWM``, not ``ru_maxrss``.

    Linux keeps ``ru_maxrss`` across ``exec``: a child started by the benchmark would report its parent's peak
    (the benchmark's own, holding a generated dataset) whenever that is the larger.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # pragma: no cover - not Linux
