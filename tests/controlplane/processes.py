"""Child processes that cannot outlive the Python process that started them."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _parent_death_signal_hook() -> Callable[[], None] | None:
    """A preexec hook that asks Linux to SIGKILL the child when its parent dies, so that
    even a SIGKILLed pytest leaves no etcd or kube-apiserver behind.

    The kernel ties this to the *thread* that forks the child: start control planes from
    the main thread (as pytest fixtures do), not from short-lived worker threads.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return hook


def spawn(args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Starts `args` in its own process group (so that it and anything it forks can be
    signalled at once), with stdout and stderr appended to `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            start_new_session=True,
            preexec_fn=_parent_death_signal_hook(),
        )


def terminate(process: subprocess.Popen[bytes], grace_seconds: float = 10.0) -> None:
    """SIGTERM to the process group, then SIGKILL once `grace_seconds` have passed."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace_seconds)
            break
        except subprocess.TimeoutExpired:
            continue
    # The leader is gone; SIGKILL whatever it may have left in its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def process_is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie has already stopped running)."""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state follows the parenthesised command name, which may itself contain spaces.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_until_gone(pids: Sequence[int], timeout: float = 10.0) -> list[int]:
    """Waits for the processes to end; returns those still running after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if process_is_running(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry on a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
