"""The fake kubelet weighs a pod's containers as a kubelet weighs their cgroups (by CPU request)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from controlplane.processes import spawn, terminate
from saigon_e2e.kubelet import cpu_nice, weigh


def container(cpu: str | None = None) -> dict[str, object]:
    return {"resources": {"requests": {"cpu": cpu}}} if cpu else {}


def test_the_largest_cpu_request_of_a_pod_is_nice_0_and_one_without_a_request_the_lowest() -> None:
    assert cpu_nice({"runtime": container("500m"), "agent": container()}) == {"runtime": 0, "agent": 19}
    # 2048 shares against 102: 20x, thirteen 1.25x steps.
    assert cpu_nice({"runtime": container("2"), "agent": container("100m")}) == {"runtime": 0, "agent": 13}
    assert cpu_nice({"runtime": container("1"), "agent": container("1000m")}) == {"runtime": 0, "agent": 0}
    assert cpu_nice({"runtime": container(), "agent": container()}) == {}  # the tests' pods: unchanged


def test_a_weighed_process_leads_a_scheduling_group_of_that_nice_value(tmp_path: Path) -> None:
    process: subprocess.Popen[bytes] = spawn(["sleep", "30"], tmp_path / "sleep.log")
    try:
        weigh(process.pid, 7)
        group = Path(f"/proc/{process.pid}/autogroup")
        if Path("/proc/self/autogroup").exists():  # a kernel with autogroups: the group's nice is set
            assert group.read_text().split()[-1] == "7"
        else:  # without them the kernel shares CPU per thread, and weigh() leaves the process as it is
            assert not group.exists()
    finally:
        terminate(process, grace_seconds=1)
