"""``medgan evaluate``: downstream segmentation benchmark, sample quality, memorisation audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from medgan.cli.app import DEVICE, check_datalist
from medgan.evaluation.arms import ARMS


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
        else:
            parts += [param.opts[0], str(value)]
    return shlex.join(parts)


@click.group("evaluate")
def evaluate_group() -> None:
    """Evaluate a generator: downstream segmentation, sample quality, memorisation."""


@evaluate_group.command("segmentation")
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="Real datalist: dataset.json, imagesTr/+labelsTr/ folder or DICOM folders.")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="Generator checkpoint (run folder or checkpoint folder); its config loads "
                   "the scans. Needed for the synthetic and insert arms.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML config used to load the scans instead of the checkpoint's (required "
                   "without --checkpoint).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output folder: report.md, report.json, PNG plots, runs/.")
@click.option("--train-cases", default="5,10,all",
              help="Training regimes: numbers of training patients, comma-separated; 'all' = "
                   "every non-test patient.")
@click.option("--seeds", type=click.IntRange(min=1), default=3,
              help="Seeds (0..N-1) per arm and regime.")
@click.option("--ratio", type=click.FloatRange(0.0, 1.0), default=0.5,
              help="Share of training patches that get added lesions (synthetic patch, GAN "
                   "insertion or CarveMix, per arm).")
@click.option("--arms", default=",".join(ARMS),
              help="Comma-separated arms to run, out of: " + ", ".join(ARMS) + ".")
@click.option("--fast", is_flag=True, default=False,
              help="Tiny UNet, 30 iterations (smoke test; numbers are not meaningful).")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Training iterations per run (default: 1000, or 30 with --fast).")
@click.option("--resume", is_flag=True, default=False,
              help="Continue the benchmark in --out, skipping finished runs.")
@click.option("--device", type=DEVICE, default="auto",
              help="auto = CUDA when available, else CPU.")
@click.option("--seed", type=click.IntRange(min=0), default=0,
              help="Seed of the patient split (test patients and regime membership).")
@click.option("--threads", type=click.IntRange(min=1), default=1,
              help="CPU threads for torch; 1 is fastest on a shared machine and gives the same "
                   "numbers on any machine.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def evaluate_segmentation_cmd(data: Path, checkpoint: Path | None, config_path: Path | None,
                              out: Path, train_cases: str, seeds: int, ratio: float, arms: str,
                              fast: bool, iterations: int | None, resume: bool, device: str,
                              seed: int, threads: int, progress: bool) -> None:
    """Train a MONAI UNet per arm, seed and training regime; compare arms on held-out patients.

    Arms: real (no augmentation), real+aug (standard augmentation, the reference),
    real+aug+synthetic (extra GAN patches), real+aug+insert (GAN lesions pasted into real
    patches), real+aug+carvemix (real lesions copied between training patients).
    """
    check_datalist(data)  # before torch loads
    if checkpoint is not None:
        from medgan.checkpoint.files import resolve_checkpoint

        resolve_checkpoint(checkpoint)
    from medgan.evaluation import evaluate_segmentation

    result = evaluate_segmentation(
        data, out, checkpoint=checkpoint, config=_eval_config(config_path),
        train_cases=train_cases, seeds=seeds, ratio=ratio,
        arms=[a.strip() for a in arms.split(",") if a.strip()], fast=fast, resume=resume,
        device=device, iterations=iterations, split_seed=seed, threads=threads,
        progress=progress, command=_command_line())
    click.echo(f"{result.n_runs} runs ({result.n_skipped} resumed)")
    click.echo(f"report: {result.report_md}")


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


@evaluate_group.command("quality")
@_real_vs_synthetic_options
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/quality/report.json"),
              help="Report JSON (a .md summary is written next to it).")
@click.option("--frd/--no-frd", default=True,
              help="Frechet Radiomics Distance (needs pip install 'medgan[frd]').")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Seed of the random pairs.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
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
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
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
