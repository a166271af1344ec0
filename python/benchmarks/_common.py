"""Helpers every benchmark shares: the processor's name and the shared data directory."""
import platform
from pathlib import Path


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def find_shared(*parts):
    """``../shared/<parts>`` searched from the current directory and this file upwards; None when absent."""
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *here.parents]:
        p = base.parent / "shared" / Path(*parts)
        if p.exists():
            return p
    return None


def find_wikitext():
    """WikiText-2 raw test text (``../shared/data/wikitext-2-raw/test.joined.txt``), or None."""
    return find_shared("data", "wikitext-2-raw", "test.joined.txt")
