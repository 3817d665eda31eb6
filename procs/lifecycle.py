"""Node processes die with the orchestrator that started them, and are known by more than a pid.

An orchestrator (``runs.api.Testbed``, ``topologies.net.EmulatedNetwork``) starts every process
behind :func:`pdeathsig_prefix` (``setpriv --pdeathsig KILL --``, util-linux) and with
:data:`PARENT_ENV` in its environment: the kernel then sends ``SIGKILL`` to the process when the
orchestrator dies, even by ``kill -9`` (Linux ``prctl(PR_SET_PDEATHSIG)``; ``mnexec`` and
``setpriv`` exec without forking, so the orchestrator stays the parent). A Python node also arms
it itself at start (:func:`die_with_orchestrator`), and exits if the orchestrator died before it
could. A node started by hand (no :data:`PARENT_ENV`) is left alone. (A ``preexec_fn`` would do
the same, but makes Python run its at-fork hooks, where a Ctrl-C is silently swallowed.)

The signal follows the *thread* that started the child: start node processes from a thread that
outlives them (the main thread, as the orchestrators here do).

A pid alone can be reused after its process died; :func:`start_ticks` (the process's start time
since boot, ``/proc/<pid>/stat`` field 22) identifies a process for cleanup.
"""
from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import subprocess

PR_SET_PDEATHSIG = 1
PARENT_ENV = "WISV_PARENT_PID"
ORPHANED_EXIT = 70  # exit status of a node whose orchestrator died before it could arm the signal


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def set_parent_death_signal(sig: int = signal.SIGKILL, libc: ctypes.CDLL | None = None) -> None:
    """Ask the kernel for ``sig`` when this process's parent (thread) dies; OSError if refused."""
    lib = libc or _libc()
    if lib.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


@functools.lru_cache(maxsize=1)
def pdeathsig_prefix() -> tuple[str, ...]:
    """The words that start a command with ``SIGKILL`` armed for its parent's death:
    ``setpriv --pdeathsig KILL --`` where util-linux's setpriv has that option, else none
    (then only Python nodes arm it, themselves, and cleanup covers the rest)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    try:
        usage = subprocess.run([setpriv, "--help"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--") if "--pdeathsig" in usage else ()


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child this process starts and owns: ``base`` (default: ours) with
    :data:`PARENT_ENV` set to our pid."""
    return {**(os.environ if base is None else base), PARENT_ENV: str(os.getpid())}


def die_with_orchestrator(environ: dict | None = None) -> bool:
    """At a node's start: when an orchestrator started it (:data:`PARENT_ENV` set), die with it —
    arm ``SIGKILL`` on the parent's death, and exit with :data:`ORPHANED_EXIT` if the
    orchestrator is already gone.
    The variable is removed, so the node's own children do not inherit it. Returns True when
    armed, False for a node started by hand."""
    env = os.environ if environ is None else environ
    parent = env.pop(PARENT_ENV, None)
    if not parent or not parent.isdigit():
        return False
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != int(parent) and not _alive(int(parent)):  # a wrapper between us may have forked
        os._exit(ORPHANED_EXIT)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or
    None if there is no such process. With the pid it names one process for good."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) is parenthesised and may hold spaces: split after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3
    except (IndexError, ValueError):
        return None


def is_same_process(pid: int, ticks: int | None) -> bool:
    """True while ``pid`` is still the process that started at ``ticks`` (None: any process)."""
    now = start_ticks(pid)
    return now is not None and (ticks is None or now == ticks)


def net_namespace(pid: int) -> str | None:
    """The network namespace of ``pid`` (``net:[inode]``), or None if it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def pids_in_namespaces(namespaces: set[str]) -> list[int]:
    """Pids of every live process whose network namespace is one of ``namespaces``."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and net_namespace(int(d)) in namespaces:
            out.append(int(d))
    return out


def close_and_wait(proc: subprocess.Popen, timeout_s: float = 3.0) -> None:
    """Stop a child that exits when its standard input closes (a packet element): close it, wait
    up to ``timeout_s`` s, then SIGKILL it and reap it."""
    try:
        proc.stdin.close()
        proc.wait(timeout=timeout_s)
    except (subprocess.TimeoutExpired, OSError):
        proc.kill()
        proc.wait(timeout=timeout_s)
