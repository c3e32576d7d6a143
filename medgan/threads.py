"""CPU threads for torch, chosen once per command before torch starts its thread pools.

torch's default (one intra-op thread per core, OpenMP threads that spin while they wait) is
fastest on an idle machine and collapses on a busy one: every parallel region waits for the
thread whose core another process holds. On a 2-core machine with one other CPU-bound job,
training ran at 15 images/s with two threads and 83 with one. So every ``medgan`` command
picks its thread count here, in this order:

1. the command's ``--threads N`` (``threads`` argument of :func:`configure_threads`);
2. the environment variable ``MEDGAN_THREADS`` (a number, or ``auto``);
3. the config key ``train.threads`` (``medgan train`` only, see :func:`apply_config_threads`);
4. ``OMP_NUM_THREADS`` when set (``torchrun`` sets it to 1 for several processes per node);
5. the command's own fallback (``medgan evaluate segmentation``: 1, for numbers that do not
   depend on the machine), else automatic: the cores this process may use
   (``os.sched_getaffinity``, a cgroup CPU quota), less those other processes keep busy right
   now (measured from ``/proc/stat`` while torch is imported), at least 1.

OpenMP's threads are also told to sleep instead of spin while they wait
(``OMP_WAIT_POLICY=PASSIVE``), unless the variable is set already; this only takes effect when
torch is not imported yet. This module does not import torch until :func:`configure_threads`
runs, so the CLI stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass

from medgan.errors import ConfigError

log = logging.getLogger(__name__)

ENV_VAR = "MEDGAN_THREADS"
WAIT_POLICY = "PASSIVE"
#: Shortest window (seconds) over which the load of other processes is measured.
PROBE_WINDOW_S = 0.25
#: A core counts as free from this much idle time on (a thread on a core that is busy a
#: quarter of the time already stalls every parallel region).
FREE_MARGIN = 0.2
_AUTOMATIC = "automatic"
_current: ThreadChoice | None = None


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a command uses and why.

    ``source`` names what decided it: "threads argument", "MEDGAN_THREADS", "train.threads",
    "OMP_NUM_THREADS", "fallback", "automatic" or "MEDGAN_THREADS=auto"; ``busy_cores`` is the
    load of other processes (cores) measured for an automatic choice, None otherwise.
    """

    threads: int
    source: str
    usable_cores: int
    busy_cores: float | None = None
    wait_policy: str | None = None


def usable_cores() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota - 1e-9)))
    return max(1, n)


def _cgroup_cpu_quota() -> float | None:
    """CPUs' worth of time the cgroup may use (``cpu.max`` v2 or CFS quota v1); None = no cap."""
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", encoding="ascii") as fh:
            quota_us = int(fh.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us", encoding="ascii") as fh:
            period_us = int(fh.read())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def _cpu_ticks(cpus: frozenset[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks since boot summed over ``cpus`` (Linux ``/proc/stat``).

    Busy counts everything but idle and I/O wait; steal (time the hypervisor gave elsewhere)
    counts as busy, since this process cannot have it either.
    """
    busy = total = 0
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                if not (line.startswith("cpu") and line[3].isdigit()):
                    continue
                name, *fields = line.split()
                if int(name[3:]) not in cpus:
                    continue
                ticks = [int(f) for f in fields[:8]]  # user .. steal; guest is inside user
                total += sum(ticks)
                busy += sum(ticks) - ticks[3] - ticks[4]
    except (OSError, ValueError, IndexError):
        return None
    return (busy, total) if total else None


def _clocks() -> tuple[float, float]:
    """(wall-clock, CPU time of this process) in seconds."""
    return time.monotonic(), time.process_time()


class LoadProbe:
    """Measures how many cores other processes keep busy, from creation to :meth:`busy_cores`.

    This process's own CPU time in the window is subtracted, so the window may overlap work
    of its own (the CLI measures while it imports torch). Without ``/proc/stat`` (macOS,
    Windows) the one-minute load average stands in.
    """

    def __init__(self) -> None:
        try:
            self.cpus = frozenset(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = frozenset(range(os.cpu_count() or 1))
        self._start = self._read()

    def _read(self) -> tuple[float, float, tuple[int, int] | None]:
        return (*_clocks(), _cpu_ticks(self.cpus))

    def busy_cores(self, min_window_s: float = PROBE_WINDOW_S) -> float | None:
        """Cores kept busy by other processes, averaged over at least ``min_window_s``."""
        t0, own0, ticks0 = self._start
        if ticks0 is None:
            try:
                return float(os.getloadavg()[0])
            except (AttributeError, OSError):
                return None
        t1, own1, ticks1 = self._read()
        if t1 - t0 < min_window_s:
            time.sleep(min_window_s - (t1 - t0))
            t1, own1, ticks1 = self._read()
        if ticks1 is None or ticks1[1] <= ticks0[1] or t1 <= t0:
            return None
        share = (ticks1[0] - ticks0[0]) / (ticks1[1] - ticks0[1])  # of all ticks of our CPUs
        own = (own1 - own0) / (t1 - t0)  # cores this process used in the window
        return max(0.0, share * len(self.cpus) - own)


def automatic_threads(cores: int, busy_cores: float | None) -> int:
    """Threads for ``cores`` usable cores of which ``busy_cores`` are taken: the free ones
    (a core counts when at least 80 % of it is idle), at least 1."""
    if busy_cores is None:
        return cores
    return max(1, min(cores, math.floor(cores - busy_cores + FREE_MARGIN)))


def _parse(value: str, name: str) -> int | None:
    """A thread count from text: a positive integer, or None for ``auto``."""
    text = value.strip().lower()
    if text == "auto":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ConfigError(f"{name} must be a positive integer or 'auto', not {value!r}")


def _explicit(threads: int | None, environ: Mapping[str, str],
              fallback: int | None) -> tuple[int | None, str]:
    """The thread count set by the caller, the environment or ``fallback``; (None, automatic)
    when none of them decides."""
    if threads is not None:
        if int(threads) < 1:
            raise ConfigError(f"threads must be a positive integer, not {threads}")
        return int(threads), "threads argument"
    if environ.get(ENV_VAR, "").strip():
        n = _parse(environ[ENV_VAR], ENV_VAR)
        return (n, ENV_VAR) if n is not None else (None, f"{ENV_VAR}=auto")
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp), "OMP_NUM_THREADS"
    if fallback is not None:
        return int(fallback), "fallback"
    return None, _AUTOMATIC


def prefer_passive_wait(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set or torch (and its OpenMP runtime,
    which reads the variable once when it loads) is imported already; returns the policy the
    runtime will use, None for the runtime's default."""
    environ = os.environ if environ is None else environ
    if "torch" not in sys.modules and "OMP_WAIT_POLICY" not in environ:
        environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return environ.get("OMP_WAIT_POLICY")


def configure_threads(threads: int | None = None, fallback: int | None = None) -> ThreadChoice:
    """Choose the CPU thread count (see the module docstring) and give it to torch.

    Call it before the first torch operation; called before ``import torch`` it also sets the
    OpenMP wait policy, and the load of other processes is measured while torch imports.

    Args:
        threads: an explicit count (``--threads``); None = decide from the environment.
        fallback: the count to use instead of the automatic one (None = automatic).
    """
    global _current
    policy = prefer_passive_wait()
    n, source = _explicit(threads, os.environ, fallback)
    probe = LoadProbe() if n is None else None
    import torch

    cores = usable_cores()
    busy = probe.busy_cores() if probe is not None else None
    if n is None:
        n = automatic_threads(cores, busy)
    torch.set_num_threads(n)
    _current = ThreadChoice(n, source, cores, busy, policy)
    log.debug("torch CPU threads: %d (%s; %d usable cores, %s busy; OMP_WAIT_POLICY %s)", n,
              source, cores, "?" if busy is None else f"{busy:.2f}", policy or "default")
    return _current


def current_choice() -> ThreadChoice | None:
    """What the last :func:`configure_threads` chose (None when it was not called)."""
    return _current


def apply_config_threads(config_threads: int | None) -> None:
    """Use a config's thread count (``train.threads``) unless ``--threads`` or
    ``MEDGAN_THREADS`` chose one already; None leaves the count as it is."""
    global _current
    if config_threads is None:
        return
    if _current is not None and _current.source.startswith(("threads argument", ENV_VAR)):
        return
    import torch

    torch.set_num_threads(int(config_threads))
    base = _current or ThreadChoice(int(config_threads), "train.threads", usable_cores())
    _current = ThreadChoice(int(config_threads), "train.threads", base.usable_cores, None,
                            base.wait_policy)


@contextlib.contextmanager
def threads_for_command(threads: int | None = None, fallback: int | None = None
                        ) -> Iterator[ThreadChoice]:
    """:func:`configure_threads` for one command; torch's previous count (when torch was
    imported before) and the recorded choice are restored afterwards, so that commands run in
    one process (tests, notebooks) do not leave their setting behind."""
    global _current
    torch = sys.modules.get("torch")
    previous = torch.get_num_threads() if torch is not None else None
    saved = _current
    try:
        yield configure_threads(threads, fallback)
    finally:
        _current = saved
        if previous is not None:
            sys.modules["torch"].set_num_threads(previous)
