"""Per-regime generators for the segmentation benchmark: one GAN per training regime, trained
on exactly that regime's training patients, inside the benchmark folder.

Layout (``<key>`` = first 16 hex digits of the SHA-256 of the sorted case ids and the
resolved config, so a generator is reused when both are equal)::

    generators/<key>/data.json   the regime's training cases (absolute paths, case ids)
    generators/<key>/run/        the medgan training run (checkpoints, model card)

A finished run (its latest checkpoint at ``train.steps``) is reused; an unfinished one is
resumed from its latest checkpoint; a run folder without any checkpoint (killed before the
first one) is removed and started again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medgan.atomic import write_json_atomic
from medgan.checkpoint import read_sidecar, resolve_checkpoint
from medgan.config import MedganConfig, config_from_dict, load_config
from medgan.data.provenance import training_cases
from medgan.errors import CheckpointError, ConfigError
from medgan.evaluation.leakage import check_generator
from medgan.evaluation.splits import Split
from medgan.sampling import load_generator
from medgan.training import train

log = logging.getLogger(__name__)
FOLDER = "generators"
#: role of a per-regime network in the benchmark -> the model.kind it must have
ROLES = {"generator": "dcgan", "inpainter": "inpaint"}


@dataclass
class RegimeGenerator:
    """A trained per-regime generator: its run folder and what it was trained on."""

    regime: str
    run_dir: Path
    case_ids: tuple[str, ...]
    trained_now: bool


def cache_key(case_ids: Sequence[str], config: MedganConfig) -> str:
    """Cache key of a generator: hash of the sorted case ids and the resolved config."""
    blob = json.dumps({"cases": sorted(case_ids), "config": config.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _finished_step(run_dir: Path) -> int | None:
    """Step of the run's latest checkpoint, or None when it has none."""
    try:
        return int(read_sidecar(resolve_checkpoint(run_dir)).get("step", 0))
    except CheckpointError:
        return None


def train_regime_generator(out: Path, regime: str, cases: Sequence[Mapping[str, Any]],
                           config: MedganConfig, device: str = "auto",
                           progress: bool = True) -> RegimeGenerator:
    """Train (or reuse, or resume) the generator of one regime on ``cases`` (datalist cases:
    ``image``, ``label``, ``case_id``); returns where it is."""
    ids = tuple(str(c["case_id"]) for c in cases)
    folder = out / FOLDER / cache_key(ids, config)
    run_dir = folder / "run"
    steps = int(config.train.steps)
    done = _finished_step(run_dir) if run_dir.exists() else None
    if done is not None and done >= steps:
        log.info("regime %s: reusing the %s model in %s", regime, config.model.kind, run_dir)
        return RegimeGenerator(regime, run_dir, ids, trained_now=False)
    data = folder / "data.json"
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(data, {
        "name": f"medgan benchmark regime {regime}",
        "training": [{"image": c["image"], "label": c["label"], "case_id": str(c["case_id"])}
                     for c in cases]})
    if done is None and run_dir.exists():
        shutil.rmtree(run_dir)  # our own run, killed before its first checkpoint
    resume = done is not None
    log.info("regime %s: %s the %s model on %d patients in %s", regime,
             "resuming" if resume else "training", config.model.kind, len(ids), run_dir)
    train(None if resume else config, data=data, out=run_dir, resume=resume, device=device,
          progress=progress, overrides={"train.steps": steps} if resume else None)
    return RegimeGenerator(regime, run_dir, ids, trained_now=True)


def generator_config(source: str | Path | MedganConfig, overrides: dict[str, Any] | None
                      ) -> MedganConfig:
    """The per-regime generator config: a YAML path (with dotted ``overrides``) or a config."""
    if isinstance(source, MedganConfig):
        if not overrides:
            return source
        return config_from_dict(source.to_dict(), source="train_generator",
                                overrides=overrides)
    return load_config(source, overrides or {})


def regime_generators(out: Path, split: Split, datalist: list[dict[str, Any]], generator: Any,
                       gen_config: MedganConfig | None, dev: torch.device, device: str,
                       allow_superset: bool, protocol: dict[str, Any],
                       previous: dict[str, Any], progress: bool, role: str = "generator"
                       ) -> dict[str, Any]:
    """regime -> loaded generator: ``generator`` for every regime, or one trained per regime
    with ``gen_config``; each is checked against the split (:func:`check_generator`) and
    recorded in ``protocol`` (``<role>s``, ``<role>_warnings``). ``previous``: that entry of
    the benchmark being resumed (a different checkpoint is refused). ``role``: "generator"
    (``model.kind: dcgan``) or "inpainter" (``model.kind: inpaint``)."""
    records = training_cases(datalist, label=False)  # labels may repeat (empty)
    by_id = {str(c["case_id"]): c for c in datalist}
    kind = ROLES[role]
    loaded, info, warnings = {}, {}, []
    for regime, ids in split.regimes.items():
        g = generator
        if gen_config is not None:
            trained = train_regime_generator(out, regime, [by_id[i] for i in ids], gen_config,
                                             device, progress)
            g = load_generator(trained.run_dir, device=dev)
        if g.spec.kind != kind:
            raise ConfigError(f"{g.checkpoint_path}: is a {g.spec.kind!r} checkpoint, but the "
                              f"benchmark's {role} must be of model.kind {kind!r}")
        note = check_generator(g.metadata, records, split.test, regime, ids,
                               str(g.checkpoint_path), allow_superset)
        if note:
            warnings.append(note if role == "generator" else f"{role}: {note}")
        loaded[regime] = g
        info[regime] = {"checkpoint": str(g.checkpoint_path),
                        "checkpoint_sha256": g.checkpoint_sha256,
                        "case_ids": [str(c["id"]) for c in g.metadata["training_cases"]]}
    for regime, entry in previous.items():
        if regime in info and entry["checkpoint_sha256"] != info[regime]["checkpoint_sha256"]:
            raise ConfigError(f"{out}: the {role} of regime {regime!r} differs from the one "
                              "the benchmark being resumed used; use a new `out`")
    protocol[f"{role}s"], protocol[f"{role}_warnings"] = info, warnings
    return loaded
