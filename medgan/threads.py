"""CPU threads for torch, chosen once per command before torch starts its thread pools.

torch's default, one intra-op thread per core whose OpenMP threads spin while they wait, is
fastest on an idle machine and collapses on a busy one: every parallel region waits for the
thread whose core another process holds, while its partner burns its own time slice spinning.
On the project's 2-core machine next to one busy loop, training ran at 2-5 images/s that way,
against 20-30 with one thread and 28-85 with two threads that sleep while they wait
(docs/benchmarks.md, "Under contention"). So every ``medgan`` command picks its thread count
here, in this order:

1. the command's ``--threads N`` (``threads`` argument of :func:`configure_threads`);
2. the environment variable ``MEDGAN_THREADS`` (a number, or ``auto``);
3. the config key ``train.threads`` (``medgan train`` only, see :func:`apply_config_threads`);
4. ``OMP_NUM_THREADS`` when set (``torchrun`` sets it to 1 for several processes per node);
5. the command's own fallback (``medgan evaluate segmentation``: 1, for numbers that do not
   depend on the machine), else automatic: the cores this process may use (its CPU affinity,
   capped by a cgroup CPU quota).

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
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass

from medgan.errors import ConfigError

log = logging.getLogger(__name__)

ENV_VAR = "MEDGAN_THREADS"
WAIT_POLICY = "PASSIVE"
_AUTOMATIC = "automatic"
_current: ThreadChoice | None = None


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a command uses and why.

    ``source`` names what decided it: "threads argument", "MEDGAN_THREADS", "train.threads",
    "OMP_NUM_THREADS", "fallback", "automatic" or "MEDGAN_THREADS=auto"; ``wait_policy`` is
    the OpenMP wait policy in force (None: the runtime's default, which spins).
    """

    threads: int
    source: str
    usable_cores: int
    wait_policy: str | None = None


def usable_cores() -> int:
    """Cores this process may run on: the physical cores of its CPU affinity mask (a core's
    hyperthreads count once, as in torch's own default), capped by a cgroup CPU quota."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    n = _physical_cores(cpus)
    quota = _cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota - 1e-9)))
    return max(1, n)


def _physical_cores(cpus: list[int]) -> int:
    """Distinct (package, core) pairs among ``cpus`` (Linux sysfs); ``len(cpus)`` without it."""
    cores = set()
    for cpu in cpus:
        topology = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(topology + "physical_package_id", encoding="ascii") as fh:
                package = fh.read().strip()
            with open(topology + "core_id", encoding="ascii") as fh:
                cores.add((package, fh.read().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


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

    Call it before the first torch operation. Called before ``import torch`` it sets the
    OpenMP wait policy and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (which torch reads when it
    loads) instead of importing torch, so the CLI can still report input errors at once (torch
    then takes at most one thread per core of the machine).

    Args:
        threads: an explicit count (``--threads``); None = decide from the environment.
        fallback: the count to use instead of the automatic one (None = automatic).
    """
    global _current
    policy = prefer_passive_wait()
    n, source = _explicit(threads, os.environ, fallback)
    cores = usable_cores()
    n = cores if n is None else n
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    else:  # torch reads these when it loads; importing it here would slow every input error
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(n)
    _current = ThreadChoice(n, source, cores, policy)
    log.debug("torch CPU threads: %d (%s; %d usable cores; OMP_WAIT_POLICY %s)", n, source,
              cores, policy or "unset")
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
    _current = ThreadChoice(int(config_threads), "train.threads", base.usable_cores,
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
    saved_env = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    saved = _current
    try:
        yield configure_threads(threads, fallback)
    finally:
        _current = saved
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        if previous is not None:
            sys.modules["torch"].set_num_threads(previous)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (None = unchanged), then put the
    previous count back (torch must be importable; it is imported here)."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None and threads != previous:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
