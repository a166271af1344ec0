"""Builds the Swift core (SwiftPM product SwiftQuantCABI) and the thin C extension over its C ABI.

`pip install ./python` from the repository root does both. Set SWIFTQUANT_SWIFT_BIN to a directory that
already holds libSwiftQuantCABI.so to skip the Swift build (the Makefile does, after building it once).
"""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LIB = "libSwiftQuantCABI.so"


def cpu_flags() -> list:
    """Swift SIMD code compiled for this machine: AVX2 + FMA when its CPU has them (as the Makefile does; the
    package itself carries no CPU flags). SWIFTQUANT_SWIFT_CPU overrides the CPU name ("" for the baseline)."""
    cpu = os.environ.get("SWIFTQUANT_SWIFT_CPU")
    if cpu is None:
        try:
            words = set(Path("/proc/cpuinfo").read_text().split())
        except OSError:
            words = set()
        cpu = "haswell" if {"avx2", "fma"} <= words else ""
    return ["-Xswiftc", "-target-cpu", "-Xswiftc", cpu] if cpu else []


def swift_bin_dir() -> Path:
    given = os.environ.get("SWIFTQUANT_SWIFT_BIN")
    if given:
        return Path(given)
    if not (ROOT / "Package.swift").exists():
        raise SystemExit(f"swiftquant: no Package.swift in {ROOT}; build from a checkout of the repository")
    flags = ["-c", "release"] + cpu_flags()
    subprocess.check_call(["swift", "build", *flags, "--product", "SwiftQuantCABI"], cwd=ROOT)
    out = subprocess.check_output(["swift", "build", *flags, "--show-bin-path"], cwd=ROOT, text=True)
    return Path(out.strip())


class BuildWithSwift(build_ext):
    def run(self):
        bin_dir = swift_bin_dir()
        lib = bin_dir / LIB
        if not lib.exists():
            raise SystemExit(f"swiftquant: {lib} was not built")
        for ext in self.extensions:
            ext.library_dirs.append(str(bin_dir))
        super().run()
        # Ship the Swift library beside the extension; the extension finds it through $ORIGIN.
        dest = Path(self.build_lib) / "swiftquant"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, dest / LIB)
        if self.inplace:
            shutil.copy2(lib, HERE / "swiftquant" / LIB)


setup(
    ext_modules=[
        Extension(
            "swiftquant._native",
            sources=["swiftquant/_native.c"],
            include_dirs=[str(ROOT / "Sources" / "CSwiftQuant" / "include")],
            libraries=["SwiftQuantCABI"],
            runtime_library_dirs=["$ORIGIN"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-unused-label"],
        )
    ],
    cmdclass={"build_ext": BuildWithSwift},
)
