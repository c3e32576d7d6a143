"""``medgan evaluate segmentation``: does GAN augmentation help a downstream segmentation model?

For every training regime (number of training patients), arm and seed a MONAI UNet is trained
(:mod:`medgan.evaluation.segmentation_run`) and scored on the same held-out patients; the report
compares each arm with ``real+aug`` by paired bootstrap (:mod:`medgan.evaluation.report`).

Output folder::

    protocol.json                     options, settings, split, checkpoint hash (resume check)
    runs/<regime>/<arm>/seed<k>.json  one finished run (written atomically when it finishes)
    runs/<regime>/<arm>/seed<k>.npz   its predicted example slices
    report.md, report.json            tables, paired differences, how to read them, the command
    dice.png, examples.png            Dice with 95% CIs; example predictions

``resume=True`` skips runs whose JSON exists and refuses to continue with a different protocol
(arms and seeds may be added).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medgan._version import __version__
from medgan.atomic import write_bytes_atomic, write_json_atomic
from medgan.config import MedganConfig, config_from_dict
from medgan.errors import ConfigError, DataError, OutputError
from medgan.evaluation.segmentation_run import (
    ARMS,
    GAN_ARMS,
    REFERENCE_ARM,
    BenchmarkSettings,
    context_roi,
    prepare_training_case,
    run_one,
    synthetic_pool,
)
from medgan.evaluation.splits import Split, make_split, parse_train_cases

log = logging.getLogger(__name__)
PROTOCOL = "protocol.json"
RESUMABLE_KEYS = ("arms", "seeds", "command")  # may change between a run and its resume


@dataclass
class SegmentationResult:
    """Where the benchmark wrote its outputs, and the summary that report.json holds."""

    out: Path
    report_md: Path
    report_json: Path
    summary: dict[str, Any]
    n_runs: int
    n_skipped: int


def _check_arms(arms: Sequence[str], checkpoint: Any, config: Any) -> list[str]:
    chosen = list(dict.fromkeys(arms))
    unknown = [a for a in chosen if a not in ARMS]
    if unknown or not chosen:
        raise ConfigError(f"--arms must be a comma-separated subset of {', '.join(ARMS)}, "
                          f"not {','.join(arms)!r}")
    if checkpoint is None and any(a in GAN_ARMS for a in chosen):
        raise ConfigError(f"arms {', '.join(a for a in chosen if a in GAN_ARMS)} need a "
                          "generator: pass --checkpoint")
    if checkpoint is None and config is None:
        raise ConfigError("pass --checkpoint (its config is used to load the scans) or --config")
    return chosen


def _resolve_config(generator: Any, config: MedganConfig | None) -> MedganConfig:
    """The checkpoint's config, or ``config`` after checking it agrees with the checkpoint."""
    if generator is None:
        if config is None:
            raise ConfigError("pass --checkpoint (its config is used to load the scans) or "
                              "--config")
        return config
    saved = config_from_dict(generator.metadata["config"], source=str(generator.checkpoint_path))
    if config is None:
        return saved
    for field in ("modality", "spatial_dims", "intensity"):
        if getattr(config, field) != getattr(saved, field):
            raise ConfigError(f"--config {field} differs from the checkpoint's; synthetic and "
                              "real images would not share one intensity space")
    if config.data.lesion_labels != saved.data.lesion_labels:
        raise ConfigError("--config data.lesion_labels differ from the checkpoint's")
    return config


def _prepare_out(out: Path, resume: bool, protocol: dict[str, Any]) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise OutputError(f"{out}: output folder is not empty; pass --resume to continue "
                              "that benchmark or choose another --out")
        old_path = out / PROTOCOL
        if old_path.is_file():
            old = json.loads(old_path.read_text(encoding="utf-8"))
            for key in sorted(set(old) | set(protocol)):
                if key not in RESUMABLE_KEYS and old.get(key) != protocol.get(key):
                    raise ConfigError(f"{out}: --resume with a different {key!r} than the "
                                      "benchmark being resumed; use a new --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the output folder ({err.strerror})") from None
    write_json_atomic(out / PROTOCOL, protocol)


def load_cases(data: str | Path, config: MedganConfig, progress: bool = True
               ) -> list[dict[str, Any]]:
    """Every case of ``data`` preprocessed with ``config`` (as in training): dicts with
    ``case_id``, ``image`` (C, X, Y, Z) in [-1, 1], ``label`` (1, X, Y, Z) uint8, ``spacing_mm``."""
    from medgan.data import load_case, load_datalist

    cases = []
    for case in tqdm(load_datalist(data), desc="loading scans", unit="case",
                     disable=not progress, leave=False):
        loaded = load_case(case, config)
        cases.append({
            "case_id": case["case_id"], "image": loaded["image"].as_tensor().float(),
            "label": loaded["label"].as_tensor().to(torch.uint8),
            "spacing_mm": tuple(float(s) for s in loaded["image"].pixdim[:3]),
        })
    return cases


def example_slices(cases: Sequence[dict[str, Any]], n: int = 3) -> list[tuple[str, int]]:
    """``(case_id, z)`` of the axial slice with the most lesion in each of the first ``n`` cases."""
    out = []
    for case in list(cases)[:n]:
        area = case["label"][0].reshape(-1, case["label"].shape[-1]).sum(0)
        z = int(area.argmax()) if int(area.max()) > 0 else case["label"].shape[-1] // 2
        out.append((case["case_id"], z))
    return out


class _ArmFactory:
    """Builds the arm-specific pieces of a run: insertion/CarveMix transform, synthetic pool."""

    def __init__(self, generator: Any, train_cases: Sequence[dict[str, Any]], spatial_dims: int,
                 settings: BenchmarkSettings) -> None:
        self.generator, self.train_cases = generator, train_cases
        self.spatial_dims, self.settings = spatial_dims, settings
        self._snippets: list[Any] | None = None

    def __call__(self, arm: str, seed: int) -> tuple[Any, Any]:
        keys = ("image", "label")
        if arm == "real+aug+insert":
            from medgan.augment import RandSyntheticLesiond

            return RandSyntheticLesiond(keys, generator=self.generator, prob=self.settings.ratio,
                                        foreground_key="foreground"), None
        if arm == "real+aug+synthetic":
            return None, synthetic_pool(self.generator, self.settings, seed)
        if arm == "real+aug+carvemix":
            from medgan.evaluation.baselines import RandCarveMixd, build_lesion_snippets

            if self._snippets is None:  # from this regime's training cases only
                self._snippets = build_lesion_snippets(self.train_cases, self.spatial_dims)
                if not self._snippets:
                    log.warning("no lesion to copy in the training cases; CarveMix is a no-op")
            return RandCarveMixd(keys, self._snippets, prob=self.settings.ratio,
                                 foreground_key="foreground"), None
        return None, None


def _run_path(out: Path, regime: str, arm: str, seed: int) -> Path:
    return out / "runs" / regime / arm / f"seed{seed}.json"


def _save_examples(path: Path, examples: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k.replace("/", "__z"): v for k, v in examples.items()})
    write_bytes_atomic(path, buf.getvalue())


def _load_examples(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path) as f:
        return {k.replace("__z", "/"): f[k] for k in f.files}


def evaluate_segmentation(
    data: str | Path, out: str | Path, checkpoint: str | Path | None = None,
    config: MedganConfig | None = None, train_cases: str | Sequence[int | str] = "5,10,all",
    seeds: int = 3, ratio: float = 0.5, arms: Sequence[str] = ARMS, fast: bool = False,
    resume: bool = False, device: str = "auto", iterations: int | None = None,
    split_seed: int = 0, threads: int | None = 1, progress: bool = True,
    command: str | None = None,
) -> SegmentationResult:
    """Run the downstream segmentation benchmark and write its report to ``out``.

    Args:
        data: the real datalist (dataset.json, imagesTr/+labelsTr/ folder or DICOM folders).
        checkpoint: generator checkpoint; its config loads and normalises the scans. Needed
            for the GAN arms; without it ``config`` is required.
        config: overrides the checkpoint's config for loading (modality, spatial_dims,
            intensity and lesion labels must agree with it).
        train_cases: training regimes, e.g. "5,10,all" (numbers of training patients).
        seeds: number of seeds (0 .. seeds-1) per arm and regime.
        ratio: share of training patches carrying added lesions (arms 3a, 3b, 4).
        fast: tiny network and 30 iterations (tests, CI); ``iterations`` overrides either mode.
        resume: continue a benchmark in ``out``, skipping finished runs.
        split_seed: seed of the patient split (test cases and regime membership).
        threads: torch CPU threads during the benchmark (None = leave torch's setting, which
            the CLI has chosen). One thread gives the same numbers on any machine and is the
            fastest on a shared one (a busy thread pool waits for cores).
    """
    from medgan.devices import resolve_device

    arms = _check_arms(arms, checkpoint, config)
    sizes = parse_train_cases(train_cases) if isinstance(train_cases, str) else list(train_cases)
    if seeds < 1:
        raise ConfigError(f"--seeds must be a positive integer, not {seeds}")
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"--ratio must be a number in [0, 1], not {ratio}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be a positive integer, not {threads}")
    dev = resolve_device(device)
    generator = None
    if checkpoint is not None:
        from medgan.sampling import load_generator

        generator = load_generator(checkpoint, device=dev)
    cfg = _resolve_config(generator, config)
    settings = _settings(fast, ratio, iterations, generator, cfg.spatial_dims)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume:  # fail before loading any scan
        raise OutputError(f"{out}: output folder is not empty; pass --resume to continue that "
                          "benchmark or choose another --out")
    cases = load_cases(data, cfg, progress)
    _check_channels(cases, generator, data)
    split = make_split([c["case_id"] for c in cases], sizes, settings.test_fraction, split_seed)
    protocol = {
        "medgan_version": __version__, "data": str(Path(data).resolve()),
        "checkpoint_sha256": generator.checkpoint_sha256 if generator else None,
        "config": cfg.to_dict(), "settings": settings.to_dict(), "fast": fast,
        "split_seed": split_seed, "train_cases": [str(s) for s in sizes], "split": split.to_dict(),
        "arms": arms, "seeds": seeds, "command": command,
    }
    _prepare_out(out, resume, protocol)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _run_all(out, cases, split, arms, seeds, cfg, settings, generator, dev, protocol,
                        progress)
    finally:
        torch.set_num_threads(previous)


def _settings(fast: bool, ratio: float, iterations: int | None, generator: Any,
              spatial_dims: int) -> BenchmarkSettings:
    """Full or fast settings with the sizes that depend on the generator filled in."""
    settings = BenchmarkSettings.fast(ratio=ratio) if fast else BenchmarkSettings(ratio=ratio)
    if iterations is not None:
        settings = replace(settings, iterations=int(iterations))
    if settings.patch_size is None:
        settings = replace(settings, patch_size=generator.patch_size if generator else 64)
    if settings.batch_size is None:
        settings = replace(settings, batch_size=8 if spatial_dims == 2 else 2)
    if int(settings.patch_size) % (2 ** len(settings.strides)) != 0:
        raise ConfigError(f"patch size {settings.patch_size} must be divisible by "
                          f"{2 ** len(settings.strides)} (the UNet's downsampling)")
    return settings


def _check_channels(cases: Sequence[dict[str, Any]], generator: Any, data: str | Path) -> None:
    if generator is None:
        return
    channels = int(cases[0]["image"].shape[0])
    if channels != generator.image_channels:
        raise DataError(f"{data}: images have {channels} channel(s) but the generator makes "
                        f"{generator.image_channels}")


def _run_all(out: Path, cases: list[dict[str, Any]], split: Split, arms: list[str], seeds: int,
             cfg: MedganConfig, settings: BenchmarkSettings, generator: Any, dev: torch.device,
             protocol: dict[str, Any], progress: bool) -> SegmentationResult:
    from medgan.evaluation.report import write_reports

    by_id = {c["case_id"]: c for c in cases}
    test_cases = [by_id[cid] for cid in split.test]
    examples_at = example_slices(test_cases)
    roi = context_roi(cfg.spatial_dims, int(settings.patch_size))
    prepared = {cid: prepare_training_case(by_id[cid], roi) for cid in split.train_pool}
    jobs = [(r, a, s) for r in split.regimes for a in arms for s in range(seeds)]
    runs, examples, skipped = [], {}, 0
    factories: dict[str, _ArmFactory] = {}
    bar = tqdm(jobs, desc="segmentation runs", unit="run", disable=not progress)
    for regime, arm, seed in bar:
        bar.set_postfix_str(f"{regime}/{arm}/seed{seed}")
        path = _run_path(out, regime, arm, seed)
        if path.is_file():
            result = json.loads(path.read_text(encoding="utf-8"))
            skipped += 1
        else:
            train_items = [prepared[cid] for cid in split.regimes[regime]]
            if regime not in factories:
                factories[regime] = _ArmFactory(generator, train_items, cfg.spatial_dims,
                                                settings)
            result, ex = run_one(arm, seed, train_items, test_cases, cfg.spatial_dims, settings,
                                 dev, factories[regime], examples_at)
            result["regime"] = regime
            path.parent.mkdir(parents=True, exist_ok=True)
            _save_examples(path.with_suffix(".npz"), ex)
            write_json_atomic(path, result)  # written last: marks the run as finished
        runs.append(result)
        if seed == 0:
            examples[(regime, arm)] = _load_examples(path.with_suffix(".npz"))
    bar.close()
    summary = write_reports(out, protocol, runs, examples, test_cases, examples_at,
                            reference=REFERENCE_ARM)
    return SegmentationResult(out, out / "report.md", out / "report.json", summary, len(runs),
                              skipped)
