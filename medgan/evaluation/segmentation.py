"""``medgan evaluate segmentation``: does GAN augmentation help a downstream segmentation model?

For every training regime (number of training patients), arm, ratio and seed a MONAI UNet is
trained (:mod:`medgan.evaluation.segmentation_run`) and scored on the same held-out patients;
the report compares each arm with ``real+aug`` over patients (:mod:`medgan.evaluation.report`).
The generator is either trained here, once per regime on that regime's training patients
(``train_generator``), or a given checkpoint that is refused when it has seen a test patient
(or, unless ``allow_generator_superset``, any patient outside the regime).

Output folder::

    protocol.json                          options, settings, split, generator hashes
    generators/<key>/                      per-regime generators (see medgan.evaluation.generators)
    runs/<regime>/<arm[@ratio]>/seed<k>.json   one finished run (written atomically)
    runs/<regime>/<arm[@ratio]>/seed<k>.npz    its predicted example slices
    report.md, report.json                 tables, paired differences, how to read them
    dice.png, examples.png                 Dice with 95% CIs; example predictions

``resume=True`` skips finished generators and runs, and refuses to continue with a different
protocol (arms, ratios and seeds may be added).
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
from medgan.config import MedganConfig
from medgan.data import load_case, load_datalist
from medgan.devices import resolve_device
from medgan.errors import ConfigError, OutputError
from medgan.evaluation.arm_transforms import ArmFactory
from medgan.evaluation.arms import (
    DEFAULT_ARMS,
    GAN_ARMS,
    INPAINT_ARMS,
    LESION_ARMS,
    REFERENCE_ARM,
    run_name,
)
from medgan.evaluation.benchmark_options import (
    benchmark_settings,
    check_arms,
    check_channels,
    check_kind,
    check_ratios,
    normalised_settings,
    resolve_config,
)
from medgan.evaluation.generators import generator_config, regime_generators
from medgan.evaluation.report import write_reports
from medgan.evaluation.segmentation_run import (
    BenchmarkSettings,
    context_roi,
    prepare_training_case,
    run_one,
)
from medgan.evaluation.splits import Split, make_split, parse_train_cases
from medgan.sampling import load_generator
from medgan.threads import torch_threads

log = logging.getLogger(__name__)
PROTOCOL = "protocol.json"
#: protocol entries that may differ between a benchmark and its resume
RESUMABLE_KEYS = ("arms", "ratios", "seeds", "command", "generators", "generator_warnings",
                  "inpainters", "inpainter_warnings")
#: entries a resume may add when the resumed benchmark has none (a generator or an inpainter
#: for new arms); once set, they must match
#: records of a resumed benchmark's networks, kept when this resume does not use them
CARRIED_KEYS = ("generators", "generator_warnings", "inpainters", "inpainter_warnings")
ADDABLE_KEYS = ("generator_config", "checkpoint_sha256", "inpainter_config",
                "inpainter_checkpoint_sha256", "inpaint_mask_source")


@dataclass
class SegmentationResult:
    """Where the benchmark wrote its outputs, and the summary that report.json holds."""

    out: Path
    report_md: Path
    report_json: Path
    summary: dict[str, Any]
    n_runs: int
    n_skipped: int


def _prepare_out(out: Path, resume: bool, protocol: dict[str, Any]) -> dict[str, Any]:
    """Create ``out`` (or check the protocol of the benchmark resumed there) and write
    protocol.json; returns the resumed benchmark's protocol ({} for a new one)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    old: dict[str, Any] = {}
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise OutputError(f"{out}: output folder is not empty; pass `resume` to continue "
                              "that benchmark or choose another `out`")
        old_path = out / PROTOCOL
        old = json.loads(old_path.read_text(encoding="utf-8")) if old_path.is_file() else {}
        if old:
            for key in sorted(set(old) | set(protocol)):
                if key in ADDABLE_KEYS and (old.get(key) is None or protocol.get(key) is None):
                    continue  # added now, or not needed by this resume's arms
                before = normalised_settings(old[key]) if key == "settings" else old.get(key)
                if key not in RESUMABLE_KEYS and before != protocol.get(key):
                    raise ConfigError(f"{out}: `resume` with a different {key!r} than the "
                                      "benchmark being resumed; use a new `out`")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the output folder ({err.strerror})") from None
    for key in (*ADDABLE_KEYS, *CARRIED_KEYS):  # keep what earlier arms used
        if protocol.get(key) is None and old.get(key) is not None:
            protocol[key] = old[key]
    write_json_atomic(out / PROTOCOL, protocol)
    return old if resume else {}


def load_cases(data: str | Path, config: MedganConfig, progress: bool = True
               ) -> list[dict[str, Any]]:
    """Every case of ``data`` preprocessed with ``config`` (as in training): dicts with
    ``case_id``, ``image`` (C, X, Y, Z) in [-1, 1], ``label`` (1, X, Y, Z) uint8, ``spacing_mm``."""
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
    seeds: int = 3, ratio: float | Sequence[float] = (0.1, 0.2, 0.3),
    arms: Sequence[str] = DEFAULT_ARMS, fast: bool = False, resume: bool = False,
    device: str = "auto", iterations: int | None = None, split_seed: int = 0,
    threads: int | None = 1, progress: bool = True, command: str | None = None,
    train_generator: str | Path | MedganConfig | None = None,
    generator_overrides: dict[str, Any] | None = None,
    allow_generator_superset: bool = False, validation_fraction: float = 0.2,
    min_component_voxels: int = 0, settings_overrides: dict[str, Any] | None = None,
    inpainter: str | Path | None = None,
    train_inpainter: str | Path | MedganConfig | None = None,
    inpainter_overrides: dict[str, Any] | None = None, inpaint_mask_source: str | None = None,
    inference_threads: int | None = None,
) -> SegmentationResult:
    """Run the downstream segmentation benchmark and write its report to ``out``.

    Args:
        data: the real datalist (dataset.json, imagesTr/+labelsTr/ folder or DICOM folders).
        checkpoint: one generator checkpoint for every regime; refused when it was trained on
            a test patient or (unless ``allow_generator_superset``) outside a regime.
        config: overrides the generator's config for loading (modality, spatial_dims,
            intensity and lesion labels must agree with it); required without a generator.
        train_cases: training regimes, e.g. "5,10,all" (numbers of patients per regime,
            validation patients included).
        seeds: number of seeds (0 .. seeds-1) per arm, ratio and regime.
        ratio: share(s) of training patches carrying an added lesion; each lesion-adding arm
            runs at every ratio and the report picks one per arm on the validation patients.
        fast: tiny network and 30 iterations (tests, CI); ``iterations`` overrides either mode.
        resume: continue a benchmark in ``out``, skipping finished generators and runs.
        split_seed: seed of the patient split (test cases and regime membership).
        threads: torch CPU threads during the benchmark (None = leave torch's setting, which
            the CLI has chosen). One thread gives the same numbers on any machine and is the
            fastest on a shared one (a busy thread pool waits for cores).
        train_generator: a training config (YAML path or config): one generator is trained
            per regime on that regime's training patients (``generator_overrides``: dotted
            keys, e.g. ``{"train.steps": 2000}``); its config loads the scans.
        validation_fraction: share of each regime's patients held out for validation.
        min_component_voxels: > 0 also reports metrics after dropping predicted components
            smaller than this (the same for every arm).
        settings_overrides: other :class:`BenchmarkSettings` fields (e.g. ``eval_every``).
        inpainter: one inpainting checkpoint (``model.kind: inpaint``) for every regime's
            ``real+aug+inpaint`` arm; checked like ``checkpoint``.
        train_inpainter: a training config of ``model.kind: inpaint``: one inpainter per regime
            on that regime's training patients (``inpainter_overrides`` as for the generator).
        inpaint_mask_source: lesion shapes of the inpaint arm, ``"real"`` (the regime's
            training masks, deformed) or ``"ellipsoid"``; None = the inpainter's config.
        inference_threads: torch CPU threads while segmenting validation and test scans (the
            logits do not depend on it); None = the usable cores.
    """
    arms = check_arms(arms, checkpoint, config, train_generator, inpainter, train_inpainter)
    if inpaint_mask_source not in (None, "real", "ellipsoid"):
        raise ConfigError(f"`inpaint_mask_source` must be real or ellipsoid, not "
                          f"{inpaint_mask_source!r}")
    sizes = parse_train_cases(train_cases) if isinstance(train_cases, str) else list(train_cases)
    if seeds < 1:
        raise ConfigError(f"`seeds` must be a positive integer, not {seeds}")
    for name, value in (("threads", threads), ("inference_threads", inference_threads)):
        if value is not None and value < 1:
            raise ConfigError(f"`{name}` must be a positive integer, not {value}")
    if inference_threads is None:
        from medgan.threads import usable_cores

        inference_threads = usable_cores()
    dev = resolve_device(device)
    generator, gen_config, inp, inp_config = None, None, None, None
    if checkpoint is not None:
        generator = load_generator(checkpoint, device=dev)
    elif train_generator is not None:
        gen_config = check_kind(generator_config(train_generator, generator_overrides),
                                "dcgan", "train_generator")
    if inpainter is not None:
        inp = load_generator(inpainter, device=dev)
    elif train_inpainter is not None:
        inp_config = check_kind(generator_config(train_inpainter, inpainter_overrides),
                                "inpaint", "train_inpainter")
    cfg = resolve_config(generator, config, gen_config, inp, inp_config)
    settings = benchmark_settings(fast, iterations,
                                  generator or gen_config or inp or inp_config, cfg.spatial_dims,
                         {"validation_fraction": validation_fraction,
                          "min_component_voxels": min_component_voxels,
                          **(settings_overrides or {})})
    ratios = check_ratios(ratio, settings) if any(a in LESION_ARMS for a in arms) else []
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not resume:  # fail before loading any scan
        raise OutputError(f"{out}: output folder is not empty; pass `resume` to continue that "
                          "benchmark or choose another `out`")

    datalist = load_datalist(data)
    cases = load_cases(data, cfg, progress)
    check_channels(cases, generator, data)
    check_channels(cases, inp, data)
    split = make_split([c["case_id"] for c in cases], sizes, settings.test_fraction, split_seed,
                       settings.validation_fraction)
    protocol = {
        "medgan_version": __version__, "data": str(Path(data).resolve()),
        "checkpoint_sha256": generator.checkpoint_sha256 if generator else None,
        "generator_config": gen_config.to_dict() if gen_config is not None else None,
        "allow_generator_superset": allow_generator_superset,
        "config": cfg.to_dict(), "settings": settings.to_dict(), "fast": fast,
        "split_seed": split_seed, "train_cases": [str(s) for s in sizes], "split": split.to_dict(),
        "arms": arms, "ratios": ratios, "seeds": seeds, "command": command,
    }
    if inp is not None or inp_config is not None:
        protocol.update(
            inpainter_config=inp_config.to_dict() if inp_config is not None else None,
            inpainter_checkpoint_sha256=inp.checkpoint_sha256 if inp is not None else None,
            inpaint_mask_source=inpaint_mask_source or (
                inp_config if inp_config is not None else inp.config).inpaint.mask_source)
    old = _prepare_out(out, resume, protocol)
    with torch_threads(threads):
        networks: dict[str, Any] = {}
        for role, given, config, needs in (("generator", generator, gen_config, GAN_ARMS),
                                           ("inpainter", inp, inp_config, INPAINT_ARMS)):
            networks[f"{role}s"] = {}
            if any(a in needs for a in arms) or given is not None:
                networks[f"{role}s"] = regime_generators(
                    out, split, datalist, given, config, dev, device, allow_generator_superset,
                    protocol, old.get(f"{role}s") or {}, progress, role)
                write_json_atomic(out / PROTOCOL, protocol)
        networks.update(mask_source=protocol.get("inpaint_mask_source"),
                        inference_threads=inference_threads)
        return _run_all(out, cases, split, arms, ratios, seeds, cfg, settings, networks, dev,
                        protocol, progress)


def _jobs(split: Split, arms: Sequence[str], ratios: Sequence[float], seeds: int
          ) -> list[tuple[str, str, float | None, int]]:
    """(regime, arm, ratio or None, seed) of every run, in report order."""
    return [(r, a, q, s) for r in split.regimes for a in arms
            for q in (ratios if a in LESION_ARMS else [None]) for s in range(seeds)]


def _run_all(out: Path, cases: list[dict[str, Any]], split: Split, arms: list[str],
             ratios: list[float], seeds: int, cfg: MedganConfig, settings: BenchmarkSettings,
             networks: dict[str, Any], dev: torch.device, protocol: dict[str, Any],
             progress: bool) -> SegmentationResult:
    by_id = {c["case_id"]: c for c in cases}
    test_cases = [by_id[cid] for cid in split.test]
    examples_at = example_slices(test_cases)
    roi = context_roi(cfg.spatial_dims, int(settings.patch_size))
    prepared = {cid: prepare_training_case(by_id[cid], roi)
                for ids in split.regimes.values() for cid in ids}
    runs, examples, skipped = [], {}, 0
    factories: dict[str, ArmFactory] = {}
    bar = tqdm(_jobs(split, arms, ratios, seeds), desc="segmentation runs", unit="run",
               disable=not progress)
    for regime, arm, ratio, seed in bar:
        name = run_name(arm, ratio)
        bar.set_postfix_str(f"{regime}/{name}/seed{seed}")
        path = _run_path(out, regime, name, seed)
        if path.is_file():
            result = json.loads(path.read_text(encoding="utf-8"))
            skipped += 1
        else:
            train_items = [prepared[cid] for cid in split.regimes[regime]]
            if regime not in factories:
                factories[regime] = ArmFactory(
                    networks["generators"].get(regime), train_items, cfg.spatial_dims,
                    networks["inpainters"].get(regime),
                    by_id[split.regimes[regime][0]]["spacing_mm"], networks["mask_source"])
            run_settings = replace(settings, ratio=ratio or 0.0)
            val_cases = [by_id[cid] for cid in split.validation.get(regime, ())]
            result, ex = run_one(arm, seed, train_items, test_cases, cfg.spatial_dims,
                                 run_settings, dev, factories[regime], examples_at, val_cases,
                                 networks["inference_threads"])
            result.update(regime=regime, run=name)
            path.parent.mkdir(parents=True, exist_ok=True)
            _save_examples(path.with_suffix(".npz"), ex)
            write_json_atomic(path, result)  # written last: marks the run as finished
        runs.append(result)
        if seed == 0:
            examples[(regime, name)] = _load_examples(path.with_suffix(".npz"))
    bar.close()
    summary = write_reports(out, protocol, runs, examples, test_cases, examples_at,
                            reference=REFERENCE_ARM)
    return SegmentationResult(out, out / "report.md", out / "report.json", summary, len(runs),
                              skipped)
