"""What the process may use of the machine (cgroup files fed from a temporary directory), and what follows from it:
the default memory budget, thread counts clamped to the CPUs, per-plan limits."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.runtime import config
from cloudeasyml.runtime.config import served_instances, session_threads
from cloudeasyml.runtime.machine import available_cpus, cgroup_cpu_limit, memory_limit_bytes
from cloudeasyml.services import memory_budget_bytes
from cloudeasyml.settings import RuntimeSettings, ServerSettings, Settings, TenantLimits, load_settings

GIB = 2**30
PHYSICAL = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cgroup_tree(tmp_path: Path, proc_lines: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake ``/sys/fs/cgroup`` and ``/proc/self/cgroup``."""
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = root.parent / "proc_self_cgroup"
    proc.write_text(proc_lines)
    return root, proc


def test_memory_limit_is_the_tightest_cgroup_v2_limit_along_the_ancestors(tmp_path: Path) -> None:
    root, proc = cgroup_tree(
        tmp_path,
        "0::/kubepods/pod1/ctr\n",
        {
            "kubepods/memory.max": f"{4 * GIB}\n",
            "kubepods/pod1/memory.max": f"{GIB}\n",  # the pod's limit binds the container inside it
            "kubepods/pod1/ctr/memory.max": "max\n",
        },
    )
    assert memory_limit_bytes(root, proc) == min(GIB, PHYSICAL)


def test_memory_limit_reads_cgroup_v1(tmp_path: Path) -> None:
    root, proc = cgroup_tree(
        tmp_path,
        "4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n0::/\n",
        {
            "memory/docker/abc/memory.limit_in_bytes": f"{512 * 2**20}\n",
            "memory/memory.limit_in_bytes": "9223372036854771712",
        },
    )
    assert memory_limit_bytes(root, proc) == min(512 * 2**20, PHYSICAL)


def test_memory_limit_without_a_cgroup_limit_is_the_physical_memory(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, "0::/\n", {"memory.max": "max\n"})
    assert memory_limit_bytes(root, proc) == PHYSICAL


def test_a_container_without_a_cgroup_namespace_reads_its_mount_root(tmp_path: Path) -> None:
    # /proc/self/cgroup names the host's path, which the container's mount does not have.
    root, proc = cgroup_tree(tmp_path, "0::/system.slice/docker-1.scope\n", {"memory.max": f"{2 * GIB}\n"})
    assert memory_limit_bytes(root, proc) == min(2 * GIB, PHYSICAL)


def test_default_memory_budget_is_a_fraction_of_the_container_limit_shared_by_workers(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, "0::/\n", {"memory.max": f"{GIB}\n"})
    limit = memory_limit_bytes(root, proc)
    assert memory_budget_bytes(Settings(), limit) == GIB // 2  # half of it by default, not unlimited
    two_workers = Settings(server=ServerSettings(workers=2))
    assert memory_budget_bytes(two_workers, limit) == GIB // 4
    explicit = Settings(runtime=RuntimeSettings(memory_budget_mb=100))
    assert memory_budget_bytes(explicit, limit) == 100 * 2**20
    off = Settings(runtime=RuntimeSettings(memory_budget_fraction=0))
    assert memory_budget_bytes(off, limit) == 0
    assert memory_budget_bytes(Settings(), None) == 0


def test_cpu_quota_limits_the_cpus(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, "0::/ctr\n", {"ctr/cpu.max": "150000 100000\n", "cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(root, proc) == 1.5
    assert available_cpus(root, proc) == min(2, len(os.sched_getaffinity(0)))  # 1.5 CPUs: 2 threads may run
    v1_root, v1_proc = cgroup_tree(
        tmp_path / "v1", "3:cpu,cpuacct:/\n", {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}
    )
    assert available_cpus(v1_root, v1_proc) == 1
    unlimited, unlimited_proc = cgroup_tree(
        tmp_path / "none", "3:cpu,cpuacct:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}
    )
    assert cgroup_cpu_limit(unlimited, unlimited_proc) is None


def test_threads_are_clamped_to_the_cpus_split_between_instances() -> None:
    assert session_threads(ServingConfig(intra_op_threads=256), cpus=4) == 4
    assert session_threads(ServingConfig(intra_op_threads=255), cpus=4) == 4  # one session key with 256
    assert session_threads(ServingConfig(intra_op_threads=256, instances=2), cpus=4) == 2
    assert session_threads(ServingConfig(intra_op_threads=3, instances=16), cpus=4) == 1
    assert served_instances(ServingConfig(instances=16), cpus=4) == 4
    for instances in range(1, 17):
        for threads in (0, 1, 3, 64, 256):
            wanted = ServingConfig(instances=instances, intra_op_threads=threads)
            served = served_instances(wanted, cpus=4) * max(1, session_threads(wanted, cpus=4))
            assert served <= 4, (instances, threads)


def test_a_confined_process_gives_onnxruntime_its_cpus_instead_of_the_machines(monkeypatch) -> None:
    monkeypatch.setattr(config.os, "cpu_count", lambda: 64)
    assert session_threads(ServingConfig(), cpus=2) == 2  # onnxruntime alone would count the host's cores
    assert session_threads(ServingConfig(), cpus=64) == 0  # not confined: onnxruntime's choice


def test_plan_limits_come_from_a_json_setting_over_the_defaults() -> None:
    settings = load_settings(
        {
            "CLOUDEASYML_LIMITS__MAX_DEPLOYMENTS": "20",
            "CLOUDEASYML_LIMITS__PLANS": '{"free": {"max_deployments": 2, "max_loaded_deployments": 1}, "pro": {}}',
        }
    )
    assert settings.limits.for_plan("free") == TenantLimits(max_deployments=2, max_loaded_deployments=1)
    assert settings.limits.for_plan("pro") == TenantLimits(max_deployments=20, max_loaded_deployments=8)
    assert settings.limits.for_plan("unknown") == settings.limits.for_plan("default")
    with pytest.raises(msgspec.ValidationError):
        load_settings({"CLOUDEASYML_LIMITS__PLANS": "{not json"})
    with pytest.raises(msgspec.ValidationError):
        load_settings({"CLOUDEASYML_LIMITS__PLANS": '{"free": {"max_deployment": 2}}'})  # a typo is refused
