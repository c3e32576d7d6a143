"""Run folders of ``medgan train``: may this folder be started or resumed, and from where?

Checked before anything heavy loads and before anything is written, so a wrong ``out`` is
reported at once and a failed start leaves no folder behind. A run folder holds::

    config.yaml     the resolved config (written once the data have loaded)
    run.json        seed and datalist of the run (so a resume needs neither)
    checkpoints/    see medgan.checkpoint
    cache/          the patch cache

A folder with ``config.yaml`` but no checkpoint yet (a run killed before its first checkpoint)
resumes from step 0, reusing its patch cache when it still matches.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medgan.atomic import write_json_atomic
from medgan.checkpoint.files import LATEST, SIDECAR, read_sidecar, resolve_checkpoint
from medgan.config import MedganConfig, config_from_dict, read_config_file
from medgan.errors import CheckpointError, ConfigError, OutputError

CONFIG_FILE = "config.yaml"
RUN_RECORD = "run.json"


@dataclass(frozen=True)
class RunPlan:
    """Where a training run starts.

    ``checkpoint`` is the folder to resume from (None: step 0); ``saved`` is the config dict
    the run was started with (resume only) and ``record`` its seed and datalist.
    """

    run_dir: Path
    resume: bool
    checkpoint: Path | None = None
    saved: dict[str, Any] | None = None
    record: dict[str, Any] | None = None

    @property
    def restarts(self) -> bool:
        """Resuming a run that wrote no checkpoint yet: it starts again from step 0."""
        return self.resume and self.checkpoint is None


def plan_run(out: str | Path, resume: bool, probe: bool = True) -> RunPlan:
    """Validate ``out`` for a new run or a resume; leaves nothing behind.

    ``probe`` tries a write in the folder (created and removed again); under torchrun only
    rank 0 probes, since the ranks would remove each other's probe folder.
    """
    run_dir = Path(out)
    if not resume:
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise OutputError(f"{run_dir}: run folder already exists and is not empty; pass "
                              "`resume` to continue that run or choose another `out`")
        if probe:
            _check_writable(run_dir)
        return RunPlan(run_dir, resume=False)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: cannot resume: the run folder does not exist")
    record = read_run_record(run_dir)
    pointers = (run_dir / "checkpoints" / LATEST, run_dir / LATEST, run_dir / SIDECAR)
    if not any(p.exists() for p in pointers):  # killed before its first checkpoint
        if not (run_dir / CONFIG_FILE).is_file():
            raise CheckpointError(f"{run_dir}: cannot resume: no medgan checkpoint and no "
                                  f"{CONFIG_FILE} here (not a medgan run folder)")
        return RunPlan(run_dir, True, None, read_config_file(run_dir / CONFIG_FILE), record)
    folder = resolve_checkpoint(run_dir)  # a damaged pointer is an error, not a fresh start
    meta = read_sidecar(folder)
    record = {"seed": meta.get("seed"), "data_source": meta.get("data_source"), **record}
    return RunPlan(run_dir, True, folder, meta["config"], record)


def _check_writable(run_dir: Path) -> None:
    """Create the folder and a probe file in it, then remove what was created: the one way to
    learn whether writing works (permissions, read-only mounts, ACLs) and leave nothing."""
    created: list[Path] = []
    missing = run_dir
    while not missing.exists() and missing != missing.parent:
        created.append(missing)
        missing = missing.parent
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        with probe.open("wb"):
            pass
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{run_dir}: cannot write to the run folder "
                          f"({err.strerror or err})") from None
    finally:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()


def create_run_dir(run_dir: Path, seed: int, data_source: str | Path) -> None:
    """Make the folder and record the run's seed and datalist (after the data loaded)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / RUN_RECORD, {"seed": seed, "data_source": str(data_source)})
    except OSError as err:
        raise OutputError(f"{run_dir}: cannot write to the run folder ({err.strerror})") from None


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run folder, or {} when there is none (runs of medgan 0.1)."""
    try:
        data = json.loads((run_dir / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else {}


def resolve_run_config(plan: RunPlan, config: MedganConfig | None,
                       overrides: dict[str, Any] | None) -> MedganConfig:
    """The config a run trains with.

    A new run uses ``config``. A resumed run uses its own saved config; ``config`` (or
    ``overrides``, dotted ``train.*`` keys such as ``{"train.steps": 3000}``) may change only
    ``train.*`` settings.
    """
    if not plan.resume:
        if config is None:
            raise ConfigError("a config is required for a new run", param="config")
        return config
    source = str(plan.checkpoint / "checkpoint.json" if plan.checkpoint
                 else plan.run_dir / CONFIG_FILE)
    saved = config_from_dict(plan.saved or {}, source=source)
    if config is None:
        bad = [k for k in overrides or {} if not k.startswith("train.")]
        if bad:
            raise ConfigError(f"{bad[0]}: only train.* settings may change on resume",
                              param="overrides")
        return config_from_dict(saved.to_dict(), source=source, overrides=overrides)
    if config.model != saved.model or config.data != saved.data or \
            config.modality != saved.modality or config.spatial_dims != saved.spatial_dims:
        raise ConfigError(
            f"{plan.run_dir}: the config changes the model, data or modality of the run being "
            "resumed; only train.* settings (e.g. train.steps) may change on resume",
            param="config")
    return saved.model_copy(update={"train": config.train})
