"""mamba_jax.hugepages: when the launchers re-execute with glibc.malloc.hugetlb=1, and that they do."""

import os
import pathlib
import subprocess
import sys

import pytest

from mamba_jax import hugepages


@pytest.fixture
def supported(monkeypatch):
    monkeypatch.setattr(hugepages.sys, "platform", "linux")
    monkeypatch.setattr(hugepages, "_glibc_supports_hugetlb", lambda: True)
    monkeypatch.setattr(hugepages, "_thp_available", lambda: True)


def test_environment_adds_the_tunable(supported):
    env = hugepages.hugepage_environment({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    env = hugepages.hugepage_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


def test_no_reexec_when_opted_out_or_already_set(supported):
    assert hugepages.hugepage_environment({"MAMBA_JAX_HUGEPAGES": "0"}) is None
    assert hugepages.hugepage_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    assert hugepages.hugepage_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}) is None
    assert hugepages.hugepage_environment({"MAMBA_JAX_HUGEPAGES": "1"}) == {
        "MAMBA_JAX_HUGEPAGES": "1", "GLIBC_TUNABLES": hugepages.TUNABLE}
    # other tunables are kept, the huge-page one appended
    assert hugepages.hugepage_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == {
        "GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{hugepages.TUNABLE}"}


def test_no_reexec_without_glibc_or_thp(monkeypatch):
    monkeypatch.setattr(hugepages.sys, "platform", "linux")
    monkeypatch.setattr(hugepages, "_thp_available", lambda: True)
    monkeypatch.setattr(hugepages.platform, "libc_ver", lambda: ("glibc", "2.34"))
    assert hugepages.hugepage_environment({}) is None
    monkeypatch.setattr(hugepages.platform, "libc_ver", lambda: ("", ""))  # musl, macOS
    assert hugepages.hugepage_environment({}) is None
    monkeypatch.setattr(hugepages.platform, "libc_ver", lambda: ("glibc", "2.36"))
    assert hugepages.hugepage_environment({}) == {"GLIBC_TUNABLES": hugepages.TUNABLE}
    monkeypatch.setattr(hugepages, "_thp_available", lambda: False)
    assert hugepages.hugepage_environment({}) is None
    monkeypatch.setattr(hugepages, "_thp_available", lambda: True)
    monkeypatch.setattr(hugepages.sys, "platform", "darwin")
    assert hugepages.hugepage_environment({}) is None


def test_thp_setting_is_read_from_the_kernel_file(tmp_path):
    f = tmp_path / "enabled"
    for text, expected in [("always [madvise] never\n", True), ("[always] madvise never\n", True),
                           ("always madvise [never]\n", False)]:
        f.write_text(text)
        assert hugepages._thp_available(str(f)) is expected
    assert hugepages._thp_available(str(tmp_path / "missing")) is False


def test_reexec_runs_the_same_command_once_with_the_tunable():
    """A child that calls reexec_with_hugepage_malloc() and prints its tunables prints exactly once,
    with the tunable where this machine supports it and unchanged where it does not."""
    code = ("import os; from mamba_jax import hugepages as m; "
            "m.reexec_with_hugepage_malloc(); print('TUNABLES=' + os.environ.get('GLIBC_TUNABLES', ''))")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MAMBA_JAX_HUGEPAGES")}
    expected_env = hugepages.hugepage_environment(env)
    expected = expected_env["GLIBC_TUNABLES"] if expected_env else ""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert [l for l in out.splitlines() if l.startswith("TUNABLES=")] == ["TUNABLES=" + expected]
    env["MAMBA_JAX_HUGEPAGES"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert [l for l in out.splitlines() if l.startswith("TUNABLES=")] == ["TUNABLES="]


def test_the_launcher_reaches_its_reexec_without_importing_jax():
    """experiments.train re-executes itself before it does any work; what it imports up to that point
    (absl, the config, this module) must not start JAX, or every launch would import it twice."""
    code = "import sys, experiments.train, mamba_jax; mamba_jax.Config; print('JAX=' + str('jax' in sys.modules))"
    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["JAX=False"]
    code = "import sys, mamba_jax; mamba_jax.update; print('JAX=' + str('jax' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["JAX=True"]  # the package's names still load on first use
