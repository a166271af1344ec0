"""Builds the Swift core (SwiftPM product SwiftQuantCABI) and the thin C extension over its C ABI.

`pip install ./python` from the repository root does both. Set SWIFTQUANT_SWIFT_BIN to a directory that
already holds libSwiftQuantCABI.so to skip the Swift build (the Makefile does, after building it once).

The package needs no Swift toolchain where it is installed: the Swift runtime libraries that
libSwiftQuantCABI.so loads from the toolchain (libswiftCore, Foundation, Dispatch, ICU data …) are copied beside
it, and its RUNPATH, which names the toolchain's library folder, is rewritten to `$ORIGIN` (what auditwheel does
for a wheel; the system's C/C++ libraries — libc, libm, libstdc++, libgcc_s — stay external). `pip wheel ./python`
therefore gives a wheel that runs on a machine without Swift (same CPU family and a glibc at least as new).
"""

import os
import shutil
import struct
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


class ELFDynamic:
    """NEEDED names and RUNPATH/RPATH of a 64-bit little-endian ELF shared object, read from its PT_DYNAMIC
    segment (the layout in the System V ABI's ELF specification), and an in-place rewrite of its run path."""

    DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 15, 29

    def __init__(self, path: Path):
        self.path = Path(path)
        data = self.path.read_bytes()
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise SystemExit(f"swiftquant: {path}: not a 64-bit little-endian ELF file")
        phoff, = struct.unpack_from("<Q", data, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
        loads, dynamic = [], None
        for i in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data,
                                                                                    phoff + i * phentsize)
            if p_type == 1:
                loads.append((p_vaddr, p_offset, p_filesz))
            elif p_type == 2:
                dynamic = (p_offset, p_filesz)
        if dynamic is None:
            raise SystemExit(f"swiftquant: {path}: no dynamic segment")
        entries = []
        off, end = dynamic[0], dynamic[0] + dynamic[1]
        while off + 16 <= end:
            tag, val = struct.unpack_from("<qQ", data, off)
            if tag == self.DT_NULL:
                break
            entries.append((tag, val))
            off += 16
        strtab = next(v for t, v in entries if t == self.DT_STRTAB)
        self.strtab = next(o + strtab - va for va, o, sz in loads if va <= strtab < va + sz)

        def string(at):
            return data[self.strtab + at:data.index(b"\0", self.strtab + at)].decode()

        self.needed = [string(v) for t, v in entries if t == self.DT_NEEDED]
        self.runpath_entries = [(self.strtab + v, string(v)) for t, v in entries
                                if t in (self.DT_RUNPATH, self.DT_RPATH)]

    @property
    def runpath(self) -> list:
        return [d for _, s in self.runpath_entries for d in s.split(":") if d]

    def set_runpath(self, value: str) -> None:
        """Overwrites the run path string in place (`value` padded with NULs; it must not be longer)."""
        raw = value.encode()
        with open(self.path, "r+b") as f:
            for at, old in self.runpath_entries:
                if len(raw) > len(old.encode()):
                    raise SystemExit(f"swiftquant: {self.path}: cannot write RUNPATH {value!r} over {old!r}")
                f.seek(at)
                f.write(raw + b"\0" * (len(old.encode()) - len(raw)))


def bundle_swift_runtime(lib: Path, dest: Path) -> list:
    """Copies into `dest` every library `lib` needs (directly or through each other) that lives in a folder of
    its RUNPATH other than its own ($ORIGIN): the Swift toolchain's runtime. Then every copy, `lib` included, gets
    RUNPATH `$ORIGIN`. Returns the copied file names."""
    toolchain = [Path(d) for d in ELFDynamic(lib).runpath if not d.startswith("$ORIGIN")]
    copied, todo = [], [dest / lib.name]
    while todo:
        elf = ELFDynamic(todo.pop())
        for name in elf.needed:
            if (dest / name).exists() or name in copied:
                continue
            src = next((d / name for d in toolchain if (d / name).is_file()), None)
            if src is None:
                continue  # a system library (libc, libstdc++ …): stays external
            shutil.copy2(src, dest / name)
            copied.append(name)
            todo.append(dest / name)
    for name in [lib.name] + copied:
        elf = ELFDynamic(dest / name)
        if any(not d.startswith("$ORIGIN") for d in elf.runpath):
            elf.set_runpath("$ORIGIN")
        left = [d for d in ELFDynamic(dest / name).runpath if not d.startswith("$ORIGIN")]
        if left:
            raise SystemExit(f"swiftquant: {dest / name} still has RUNPATH {left}")
    return copied


class BuildWithSwift(build_ext):
    def run(self):
        bin_dir = swift_bin_dir()
        lib = bin_dir / LIB
        if not lib.exists():
            raise SystemExit(f"swiftquant: {lib} was not built")
        for ext in self.extensions:
            ext.library_dirs.append(str(bin_dir))
        super().run()
        # Ship the Swift library beside the extension (which finds it through $ORIGIN), and the Swift runtime
        # beside the library.
        dests = [Path(self.build_lib) / "swiftquant"] + ([HERE / "swiftquant"] if self.inplace else [])
        for dest in dests:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib, dest / LIB)
            copied = bundle_swift_runtime(lib, dest)
        print(f"swiftquant: bundled the Swift runtime beside {LIB}: {', '.join(copied) or 'nothing needed'}")
        # The extension itself: only $ORIGIN (the compiler may add the build machine's Python library folder).
        for ext in self.extensions:
            elf = ELFDynamic(Path(self.get_ext_fullpath(ext.name)))
            if any(not d.startswith("$ORIGIN") for d in elf.runpath):
                elf.set_runpath("$ORIGIN")


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
