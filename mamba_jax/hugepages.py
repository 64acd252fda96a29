"""Transparent huge pages for host `malloc` on Linux/glibc: faster XLA:CPU executables.

XLA's CPU runtime mallocs the temporary buffers of an executable on every call and frees them
afterwards. glibc serves such large blocks with fresh `mmap`s, so every call touches its whole
working set as new 4-KiB pages: one update of the full `point_robot` preset page-faults about
1.5-1.9 GB (380-480k minor faults, 1.5-2 s of kernel CPU time per update on 2 cores).
glibc >= 2.35 has a tunable, `glibc.malloc.hugetlb=1`, that makes malloc request transparent
huge pages (madvise) for those blocks: 23x fewer faults (380k -> 16k per update), a third of the
kernel time, and a 1.35x faster point_robot update timed alone (median of 3 interleaved rounds:
`results/bench_malloc.json`; the script last existed at commit b7ad6bd). A training chunk, which
allocates once for all the updates inside it, gains less (docs/benchmarks.md, "Huge pages for malloc").
A preloaded tcmalloc (`LD_PRELOAD=libtcmalloc_minimal.so.4`), which keeps freed memory for reuse,
did as well in a quick check (not in the benchmark).

Tunables are read when a process starts, so `reexec_with_hugepage_malloc()` re-executes the
current command once with the tunable added to `GLIBC_TUNABLES`. The launchers in `experiments/`
call it first thing; call it at the top of your own script for the same effect. It does nothing
(returns False) when:

* the environment variable `MAMBA_JAX_HUGEPAGES=0` is set (opt out),
* `GLIBC_TUNABLES` already sets `glibc.malloc.hugetlb` (also: after the re-exec),
* the process is not on Linux with glibc >= 2.35, or the kernel's transparent huge pages are
  disabled (`/sys/kernel/mm/transparent_hugepage/enabled` is `[never]`).

It only changes how the host allocates memory; results are bitwise the same.
"""

from __future__ import annotations

import os
import platform
import sys

OPT_OUT_VAR = "MAMBA_JAX_HUGEPAGES"
TUNABLE = "glibc.malloc.hugetlb=1"
_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_supports_hugetlb() -> bool:
    libc, version = platform.libc_ver()
    if libc != "glibc":
        return False
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 35)


def _thp_available(path: str = _THP_ENABLED) -> bool:
    try:
        with open(path) as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def hugepage_environment(environ: dict | None = None) -> dict | None:
    """The environment to re-execute with, or None when no re-exec is wanted (see module doc)."""
    environ = dict(os.environ if environ is None else environ)
    if environ.get(OPT_OUT_VAR, "1") == "0":
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return None
    if not sys.platform.startswith("linux") or not _glibc_supports_hugetlb() or not _thp_available():
        return None
    environ["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    return environ


def reexec_with_hugepage_malloc() -> bool:
    """Re-executes this process's command line with `GLIBC_TUNABLES` += `glibc.malloc.hugetlb=1`.

    Does not return when it re-executes; returns False when nothing is to be done. Call it before
    any work (it restarts the interpreter): the launchers call it before parsing flags.
    """
    env = hugepage_environment()
    if env is None:
        return False
    sys.stdout.flush()
    sys.stderr.flush()
    # sys.orig_argv keeps `-m package.module` (sys.argv would turn it into a file path).
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    return True  # pragma: no cover - execve does not return
