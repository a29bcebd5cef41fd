"""The fake kubelet weighs a pod's containers as a kubelet weighs their cgroups (by CPU request)."""

from __future__ import annotations

import subprocess
import sys
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


LEADS = """
import os, sys
sys.path.insert(0, {tests!r})
from saigon_e2e.kubelet import lead_a_session
parent = os.getpid()
lead_a_session()
print(os.getsid(0) == os.getpid(), os.getpid() == parent, flush=True)
sys.exit(3)
"""


def test_a_benchmark_leads_a_session_of_its_own_however_it_was_started() -> None:
    """From a script (setsid works) and as a process group leader, as an interactive shell starts
    it (setsid is refused: it forks, and the parent passes on the child's exit status)."""
    code = LEADS.format(tests=str(Path(__file__).parent))
    from_a_script = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert (from_a_script.returncode, from_a_script.stdout.split()) == (3, ["True", "True"])
    as_group_leader = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, process_group=0
    )
    assert (as_group_leader.returncode, as_group_leader.stdout.split()) == (3, ["True", "False"])
