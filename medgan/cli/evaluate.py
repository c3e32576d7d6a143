"""``medgan evaluate``: downstream segmentation benchmark, sample quality, memorisation audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from medgan.cli.app import DEVICE, check_datalist, parse_overrides, threads_option
from medgan.evaluation.arms import ARMS, DEFAULT_ARMS, GAN_ARMS, INPAINT_ARMS


def _split_list(text: str) -> list[str]:
    return [a.strip() for a in text.split(",") if a.strip()]


def _ratios(text: str) -> list[float]:
    try:
        return [float(r) for r in _split_list(text)]
    except ValueError:
        raise click.BadParameter(f"must be comma-separated numbers, not {text!r}",
                                 param_hint="--ratio") from None


def _eval_config(config_path: Path | None) -> Any:
    if config_path is None:
        return None
    from medgan.config import load_config

    return load_config(config_path)


def _command_line() -> str:
    """The running command with every option spelled out (recorded in reports)."""
    import shlex

    ctx = click.get_current_context()
    parts = ["medgan", "evaluate", str(ctx.info_name)]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if not isinstance(param, click.Option) or value is None:
            continue
        if param.is_flag and param.secondary_opts:
            if value != param.default:
                parts.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            parts += [param.opts[0]] if value else []
        elif param.multiple:
            for item in value:
                parts += [param.opts[0], str(item)]
        else:
            parts += [param.opts[0], str(value)]
    return shlex.join(parts)


@click.group("evaluate")
def evaluate_group() -> None:
    """Evaluate a generator: downstream segmentation, sample quality, memorisation."""


def _per_regime_options(role: str, what: str) -> Any:
    """``--train-ROLE CONFIG``, ``--ROLE-set KEY=VALUE`` and ``--ROLE-steps N`` of a network
    trained once per regime inside the benchmark (``what``: its kind and use)."""
    options = [
        click.option(f"--train-{role}", type=click.Path(path_type=Path), default=None,
                     metavar="CONFIG",
                     help=f"Train one {role} per regime on exactly that regime's training "
                          f"patients with this YAML config ({what}; cached in "
                          "--out/generators, resumable)."),
        click.option(f"--{role}-set", f"{role}_set", multiple=True, metavar="KEY=VALUE",
                     help=f"Override a field of the --train-{role} config (repeatable)."),
        click.option(f"--{role}-steps", type=click.IntRange(min=1), default=None,
                     help=f"train.steps of the per-regime {role}s (default: the config's)."),
    ]

    def decorate(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _regime_overrides(items: tuple[str, ...], steps: int | None) -> dict[str, Any]:
    """``--ROLE-set`` values plus ``--ROLE-steps`` as dotted config overrides."""
    overrides = parse_overrides(items)
    if steps is not None:
        overrides["train.steps"] = steps
    return overrides


@evaluate_group.command("segmentation")
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="Real datalist: dataset.json, imagesTr/+labelsTr/ folder or DICOM folders.")
@_per_regime_options("generator", "model.kind dcgan, for the synthetic and insert arms; its "
                     "config loads the scans unless --config is given; the recommended way to "
                     "run the benchmark")
@_per_regime_options("inpainter", "model.kind inpaint, for the real+aug+inpaint arm")
@click.option("--inpainter", type=click.Path(path_type=Path), default=None,
              help="One inpainting checkpoint for every regime instead of --train-inpainter; "
                   "checked like --checkpoint.")
@click.option("--inpaint-mask-source", type=click.Choice(["real", "ellipsoid"]), default=None,
              help="Lesion shapes of the inpaint arm: the regime's training masks, deformed "
                   "(real) or ellipses sized like them (default: the inpainter's "
                   "inpaint.mask_source).")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="One generator checkpoint for every regime instead of --train-generator. "
                   "Refused if it was trained on a test patient or outside a regime.")
@click.option("--allow-generator-superset", is_flag=True, default=False,
              help="Accept a --checkpoint trained on more patients than a regime's (never on "
                   "test patients); the report says so in its first lines.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML config used to load the scans instead of the generator's (required "
                   "without a generator).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output folder: report.md, report.json, PNG plots, runs/, generators/.")
@click.option("--train-cases", default="5,10,all",
              help="Training regimes: numbers of patients (validation ones included), "
                   "comma-separated; 'all' = every non-test patient.")
@click.option("--seeds", type=click.IntRange(min=1), default=3,
              help="Seeds (0..N-1) per arm, ratio and regime.")
@click.option("--ratio", "ratio_text", default="0.1,0.2,0.3",
              help="Share(s) of training patches that carry an added lesion, comma-separated; "
                   "each lesion-adding arm runs at every ratio and the report picks one per "
                   "arm on the validation patients.")
@click.option("--arms", default=None,
              help="Comma-separated arms to run, out of: " + ", ".join(ARMS) + ". Default: "
                   + ",".join(DEFAULT_ARMS) + " (the GAN arms only with a generator), plus "
                   "real+aug+inpaint with an inpainter.")
@click.option("--validation-fraction", type=click.FloatRange(0.0, 1.0, max_open=True),
              default=0.2, help="Share of each regime's patients held out for validation "
                                "(stopping iteration and ratio choice).")
@click.option("--min-component-voxels", type=click.IntRange(min=0), default=0,
              help="Also report metrics after dropping predicted components smaller than "
                   "this (0 = off), identically for every arm.")
@click.option("--placement-range", type=(float, float), default=None, metavar="LOW HIGH",
              help="Lesion-adding arms place lesions only on body voxels whose first channel "
                   "lies in this range, in model units [-1, 1] after the config's intensity "
                   "mapping (e.g. -1 -0.6 = 0..50 of an 8-bit lung window: lung parenchyma). "
                   "Default: anywhere in the body.")
@click.option("--fast", is_flag=True, default=False,
              help="Tiny UNet, 30 iterations (smoke test; numbers are not meaningful).")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Maximum training iterations per run (default: 2000, or 30 with --fast).")
@click.option("--eval-every", type=click.IntRange(min=1), default=None,
              help="Validation Dice every N iterations (default 200, or 10 with --fast).")
@click.option("--patience", type=click.IntRange(min=0), default=None,
              help="Stop after N validations without improvement (0 = never; default 4).")
@click.option("--resume", is_flag=True, default=False,
              help="Continue the benchmark in --out, skipping finished generators and runs.")
@click.option("--device", type=DEVICE, default="auto",
              help="auto = CUDA when available, else CPU.")
@click.option("--seed", type=click.IntRange(min=0), default=0,
              help="Seed of the patient split (test patients and regime membership).")
@click.option("--inference-threads", type=click.IntRange(min=1), default=None,
              help="CPU threads while segmenting validation and test scans (the predictions "
                   "do not depend on it). Default: the usable cores.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@threads_option(fallback=1)  # 1: the same numbers on any machine
def evaluate_segmentation_cmd(data: Path, train_generator: Path | None,
                              generator_set: tuple[str, ...], generator_steps: int | None,
                              train_inpainter: Path | None, inpainter_set: tuple[str, ...],
                              inpainter_steps: int | None, inpainter: Path | None,
                              inpaint_mask_source: str | None,
                              checkpoint: Path | None, allow_generator_superset: bool,
                              config_path: Path | None, out: Path, train_cases: str, seeds: int,
                              ratio_text: str, arms: str | None, validation_fraction: float,
                              min_component_voxels: int,
                              placement_range: tuple[float, float] | None, fast: bool,
                              iterations: int | None,
                              eval_every: int | None, patience: int | None, resume: bool,
                              device: str, seed: int, inference_threads: int | None,
                              progress: bool) -> None:
    """Train a MONAI UNet per arm, ratio, seed and training regime; compare arms on held-out
    patients.

    Arms: real (no augmentation), real+aug (standard augmentation, the reference),
    real+aug+synthetic (generated lesion patches), real+aug+insert (GAN lesions pasted into real
    patches), real+aug+carvemix (real lesions copied between training patients),
    real+aug+inpaint (lesions inpainted into real patches by a mask-conditioned GAN).
    """
    check_datalist(data)  # before torch loads
    from medgan.checkpoint.files import resolve_checkpoint

    for given in (checkpoint, inpainter):
        if given is not None:
            resolve_checkpoint(given)
    from medgan.evaluation import evaluate_segmentation

    gen_overrides = _regime_overrides(generator_set, generator_steps)
    inp_overrides = _regime_overrides(inpainter_set, inpainter_steps)
    if arms is None:  # the default arms whose networks are given
        arms = ",".join(_default_arms(train_generator or checkpoint, train_inpainter or inpainter))
    extra = {k: v for k, v in (("eval_every", eval_every), ("patience", patience),
                               ("placement_range", placement_range)) if v is not None}
    result = evaluate_segmentation(
        data, out, checkpoint=checkpoint, config=_eval_config(config_path),
        train_cases=train_cases, seeds=seeds, ratio=_ratios(ratio_text),
        arms=_split_list(arms), fast=fast, resume=resume, device=device, iterations=iterations,
        split_seed=seed, threads=None, progress=progress, command=_command_line(),
        train_generator=train_generator, generator_overrides=gen_overrides,
        allow_generator_superset=allow_generator_superset,
        validation_fraction=validation_fraction, min_component_voxels=min_component_voxels,
        settings_overrides=extra, inpainter=inpainter, train_inpainter=train_inpainter,
        inpainter_overrides=inp_overrides, inpaint_mask_source=inpaint_mask_source,
        inference_threads=inference_threads)
    click.echo(f"{result.n_runs} runs ({result.n_skipped} resumed)")
    click.echo(f"report: {result.report_md}")


def _default_arms(generator: Path | None, inpainter: Path | None) -> list[str]:
    """DEFAULT_ARMS without the GAN arms when no generator is given, plus real+aug+inpaint
    when an inpainter is."""
    arms = [a for a in DEFAULT_ARMS if generator is not None or a not in GAN_ARMS]
    return arms + (list(INPAINT_ARMS) if inpainter is not None else [])


def _real_vs_synthetic_options(command):
    """--real, --synthetic, --checkpoint and --config, shared by quality and privacy."""
    options = [
        click.option("--real", type=click.Path(path_type=Path), required=True,
                     help="Datalist of the real training data."),
        click.option("--synthetic", type=click.Path(path_type=Path), required=True,
                     help="Folder written by medgan sample (with dataset.json)."),
        click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
                     help="The generator's checkpoint (patch settings and intensity "
                          "mapping). Default: the one recorded in the synthetic dataset.json."),
        click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
                     help="Training YAML, instead of --checkpoint."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _progress_and_threads(command):
    """--progress/--no-progress and --threads, shared by quality and privacy."""
    command = threads_option()(command)
    return click.option("--progress/--no-progress", default=True,
                        help="Show a progress bar.")(command)


@evaluate_group.command("quality")
@_real_vs_synthetic_options
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/quality/report.json"),
              help="Report JSON (a .md summary is written next to it).")
@click.option("--frd/--no-frd", default=True,
              help="Frechet Radiomics Distance (needs pip install 'medgan[frd]').")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Seed of the random pairs.")
@_progress_and_threads
def evaluate_quality_cmd(real: Path, synthetic: Path, checkpoint: Path | None,
                         config_path: Path | None, out: Path, frd: bool, seed: int,
                         progress: bool) -> None:
    """Compare synthetic with real lesion patches: MMD, MS-SSIM, diversity, sizes, FRD."""
    from medgan.evaluation import evaluate_quality
    from medgan.evaluation.quality import quality_markdown

    report = evaluate_quality(real, synthetic, checkpoint=checkpoint,
                              config=_eval_config(config_path), out=out, seed=seed, frd=frd,
                              progress=progress)
    click.echo(quality_markdown(report))
    click.echo(f"report: {out}")


@evaluate_group.command("privacy")
@_real_vs_synthetic_options
@click.option("--threshold", type=click.FloatRange(-1.0, 1.0), default=0.95,
              help="Flag synthetic samples whose NCC to the nearest real patch exceeds this.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/privacy"),
              help="Output folder: report.json, report.md, closest_pairs.png.")
@click.option("--seed", type=click.IntRange(min=0), default=0,
              help="Seed of the real-vs-real reference queries.")
@_progress_and_threads
def evaluate_privacy_cmd(real: Path, synthetic: Path, checkpoint: Path | None,
                         config_path: Path | None, threshold: float, out: Path, seed: int,
                         progress: bool) -> None:
    """Memorisation audit: each synthetic patch's nearest real training patch (NCC, SSIM)."""
    from medgan.evaluation import evaluate_privacy

    report = evaluate_privacy(real, synthetic, checkpoint=checkpoint,
                              config=_eval_config(config_path), threshold=threshold, out=out,
                              seed=seed, progress=progress)
    click.echo(f"{report['n_above_threshold']} of {report['n_synthetic']} synthetic samples "
               f"have NCC > {threshold} to a real training patch (max "
               f"{report['max_ncc']:.3f})")
    click.echo(f"report: {out / 'report.md'}")
