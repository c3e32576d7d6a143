"""The ``medgan`` command line: thin click commands that parse options and call the library.

Heavy imports (torch, MONAI) happen inside the commands so ``medgan --help`` is instant. Every
:class:`~medgan.errors.MedganError` becomes one ``Error: ...`` line and exit code 2; Ctrl-C gives
exit code 130 and SIGTERM 143.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from medgan._version import __version__
from medgan.atomic import write_text_atomic
from medgan.errors import MedganError, OutputError

DEVICE = click.Choice(["auto", "cpu", "cuda"])
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


class _Group(click.Group):
    """Turns user errors into one line + exit 2 and interrupts into 130/143."""

    def invoke(self, ctx: click.Context) -> Any:
        def _on_term(signum, frame):  # SIGTERM behaves like Ctrl-C, but exits 143
            raise KeyboardInterrupt(143)

        previous = signal.signal(signal.SIGTERM, _on_term)
        previous_hook, sys.unraisablehook = sys.unraisablehook, _redeliver_lost_interrupt
        try:
            return super().invoke(ctx)
        except MedganError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt as err:
            code = err.args[0] if err.args and isinstance(err.args[0], int) else 130
            click.echo("Interrupted.", err=True)
            sys.exit(code)
        except OSError as err:  # disk full / no permission anywhere else: one line, not a bug
            if err.errno not in _ENVIRONMENT_ERRNOS:
                raise
            where = f"{err.filename}: " if err.filename else ""
            click.echo(f"Error: {where}{err.strerror or err}", err=True)
            sys.exit(2)
        finally:
            signal.signal(signal.SIGTERM, previous)
            sys.unraisablehook = previous_hook


def _redeliver_lost_interrupt(unraisable: Any) -> None:
    """Send an interrupt again that Python dropped because it landed in a finalizer.

    A signal's KeyboardInterrupt raised inside a ``__del__`` or weakref callback (torch's
    DataLoader and the import system run many) is printed as "Exception ignored" and lost, and
    the command would carry on. The signal is sent again from a thread a moment later, when the
    main thread has left the finalizer (and again, should it land in another one).
    """
    import threading

    err = unraisable.exc_value
    if isinstance(err, KeyboardInterrupt):
        sig = signal.SIGTERM if err.args and err.args[0] == 143 else signal.SIGINT
        again = threading.Timer(0.01, os.kill, (os.getpid(), sig))
        again.daemon = True
        again.start()
        return
    sys.__unraisablehook__(unraisable)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "show_default": True})
@click.version_option(__version__, prog_name="medgan")
@click.option("-v", "--verbose", is_flag=True, default=False, help="Show debug logging.")
def main(verbose: bool) -> None:
    """medgan: GAN-generated lesion image + mask pairs for medical segmentation training.

    Typical flow: check-data -> train -> sample -> evaluate. Run `medgan COMMAND --help` for the
    options of each command.
    """
    import logging
    import warnings

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    logging.getLogger("medgan").setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        warnings.filterwarnings("ignore")


def _threads_option(fallback: int | None = None, config_key: str | None = None) -> Any:
    """``--threads`` for a command that runs torch (one definition for every command).

    The count is chosen by :mod:`medgan.threads` (``--threads``, ``MEDGAN_THREADS``,
    ``config_key`` of the config, ``OMP_NUM_THREADS``, ``fallback``, else the usable cores)
    before the command imports torch; the option is not passed on to the command's function.
    """
    order = ["MEDGAN_THREADS", *([config_key] if config_key else []), "OMP_NUM_THREADS",
             str(fallback) if fallback else "the usable cores"]

    def decorate(command: Any) -> Any:
        @functools.wraps(command)
        def run(*args: Any, threads: int | None, **kwargs: Any) -> Any:
            from medgan.threads import threads_for_command

            with threads_for_command(threads, fallback):
                return command(*args, **kwargs)

        return click.option(
            "--threads", type=click.IntRange(min=1), default=None,
            show_default=", else ".join(order),
            help="CPU threads for torch (their OpenMP threads sleep while they wait, which "
                 "keeps them fast next to other jobs).")(run)

    return decorate


def _dump_json(obj: Any, path: str | None) -> None:
    text = json.dumps(obj, indent=2)
    if path in (None, "-"):
        click.echo(text)
    else:
        try:
            write_text_atomic(path, text + "\n")
        except OSError as err:
            raise OutputError(f"{path}: cannot write the report ({err.strerror or err})") from None


@main.command("check-data")
@click.argument("datalist", type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True,
              help="YAML config (modality, label values, patch size, spacing).")
@click.option("--json", "json_out", type=str, default=None,
              help="Also write the report as JSON to this file ('-' = stdout, no table).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@_threads_option()
def check_data_cmd(datalist: Path, config_path: Path, json_out: str | None,
                   progress: bool) -> None:
    """Verify a dataset before training: readability, geometry, labels, lesions, sizes.

    DATALIST is a decathlon dataset.json, a folder with imagesTr/ + labelsTr/, or a folder of
    DICOM case folders. Exits with code 1 when any case is unusable.
    """
    from medgan.config import load_config
    from medgan.data import check_dataset, format_report, load_datalist

    config = load_config(config_path)
    problems: list[str] = []
    report = check_dataset(load_datalist(datalist, problems), config, progress=progress,
                           problems=problems)
    if json_out == "-":
        _dump_json(report.to_dict(), "-")
    else:
        click.echo(format_report(report))
        if json_out:
            _dump_json(report.to_dict(), json_out)
    if not report.ok:
        first = next(c.errors[0] for c in report.cases if c.errors)
        click.echo(f"Error: {report.n_bad} unusable case(s) in {datalist}; first: {first}",
                   err=True)
        sys.exit(1)


@main.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, default=False, help="Print JSON instead.")
def info_cmd(path: Path, as_json: bool) -> None:
    """Say whether PATH is medgan synthetic output, and from which checkpoint.

    PATH is a NIfTI file, a datalist JSON, or a checkpoint / run folder. Only headers and JSON
    are read.
    """
    from medgan.info import describe, format_info

    info = describe(path)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))


def _parse_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    """``--set train.steps=100`` -> ``{"train.steps": 100}`` (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"must look like section.key=value, not {item!r}",
                                     param_hint="--set")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise click.BadParameter(f"value of {item!r} is not valid YAML",
                                     param_hint="--set") from None
    return out


@main.command("train")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML config (see configs/). Required unless --resume.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Datalist: dataset.json, imagesTr/+labelsTr/ folder or DICOM case folders. "
                   "Default: the bundled sarcoma sample of the config's modality.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/medgan"),
              help="Run folder for checkpoints, sample grids, TensorBoard logs, model card.")
@click.option("--resume", is_flag=True, default=False,
              help="Continue the run in --out from its latest checkpoint (same step, "
                   "optimiser and RNG state).")
@click.option("--device", type=DEVICE, default="auto",
              help="auto = CUDA (mixed precision) when available, else CPU.")
@click.option("--seed", type=click.IntRange(min=0), default=0,
              help="Seed for weights, patch extraction, noise and augmentation.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Override train.steps of the config.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config field, e.g. --set train.batch_size=32 (repeatable).")
@click.option("--skip-bad", is_flag=True, default=False,
              help="Report and skip unusable cases instead of stopping at the first.")
@click.option("--compile", "compile_models", is_flag=True, default=False,
              help="torch.compile the models (sets train.compile; the first steps are slower).")
@click.option("--dry-run", is_flag=True, default=False,
              help="Print the resolved config and exit without training.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
@_threads_option(config_key="train.threads")
def train_cmd(config_path: Path | None, data: Path | None, out: Path, resume: bool,
              device: str, seed: int, steps: int | None, overrides: tuple[str, ...],
              skip_bad: bool, compile_models: bool, dry_run: bool, progress: bool) -> None:
    """Train a DCGAN that generates lesion image + mask pairs for one modality.

    Runs under torchrun for several GPUs/processes: torchrun --nproc-per-node N -m medgan train.
    """
    from medgan.config import load_config

    values = _parse_overrides(overrides)
    if steps is not None:
        values["train.steps"] = steps
    if compile_models:
        values["train.compile"] = True
    if config_path is None and not resume:
        raise click.UsageError("--config is required (unless --resume continues a run)")
    config = load_config(config_path, values) if config_path is not None else None
    if dry_run:
        import yaml

        click.echo(yaml.safe_dump(config.to_dict() if config else {}, sort_keys=False))
        return
    from medgan.training.trainer import train

    result = train(config, data=data, out=out, resume=resume, device=device, seed=seed,
                   skip_bad=skip_bad, progress=progress,
                   overrides=values if config is None else None)
    if result.grid is not None:
        click.echo(f"trained {result.steps} steps ({result.images_per_s:.1f} images/s)")
        click.echo(f"checkpoint: {result.checkpoint}")
        click.echo(f"samples:    {result.grid}")
        click.echo(f"model card: {result.run_dir / 'MODEL_CARD.md'}")


@main.command("sample")
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True,
              help="Run folder, its checkpoints/ folder or one checkpoint folder.")
@click.option("-n", "--n", "n", type=click.IntRange(min=1), default=100,
              help="Number of image + mask pairs to write.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output folder: imagesTr/, labelsTr/, dataset.json, contact_sheet.png.")
@click.option("--seed", type=click.IntRange(min=0), default=0,
              help="Base seed; every sample's own seed is recorded in dataset.json.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64,
              help="Samples generated and post-processed per step (the files do not change).")
@click.option("--device", type=DEVICE, default="auto",
              help="auto = CUDA when available, else CPU.")
@click.option("--ema/--no-ema", default=True,
              help="Sample from the EMA generator weights (when the checkpoint has them).")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace medgan's outputs in a non-empty --out (other files are kept).")
@click.option("--max-similarity", type=click.FloatRange(-1.0, 1.0, min_open=True), default=None,
              help="Redraw samples whose NCC to the nearest real training patch exceeds this "
                   "(e.g. 0.95). Needs --real-data.")
@click.option("--real-data", type=click.Path(path_type=Path), default=None,
              help="Datalist of the real training data, for --max-similarity.")
@click.option("--min-lesion-voxels", type=click.IntRange(min=0), default=None,
              help="Drop mask components smaller than this (default: 10 in 2D, 20 in 3D).")
@click.option("--keep-largest", is_flag=True, default=False,
              help="Keep only the largest connected lesion component of each mask.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@_threads_option()
def sample_cmd(checkpoint: Path, n: int, out: Path, seed: int, batch_size: int, device: str,
               ema: bool, overwrite: bool, max_similarity: float | None, real_data: Path | None,
               min_lesion_voxels: int | None, keep_largest: bool, progress: bool) -> None:
    """Generate N synthetic lesion image + mask pairs from a checkpoint as a MONAI dataset.

    Images are written in physical units (HU, SUV, MR scale) with the training spacing, masks
    as uint8; the same checkpoint and --seed give byte-identical files.
    """
    if max_similarity is not None and real_data is None:
        raise click.UsageError("--max-similarity needs --real-data (the real training data)")
    from medgan.sampling import MaskPostprocess, sample

    result = sample(checkpoint, n, out, seed=seed, batch_size=batch_size, device=device,
                    use_ema=ema, overwrite=overwrite, max_similarity=max_similarity,
                    real_datalist=real_data, progress=progress,
                    postprocess=MaskPostprocess(min_size=min_lesion_voxels,
                                                keep_largest=keep_largest))
    click.echo(f"wrote {result.n} pairs ({result.samples_per_s:.1f} samples/s)")
    click.echo(f"datalist:      {result.datalist}")
    click.echo(f"contact sheet: {result.contact_sheet}")
    if result.n_redrawn_empty or result.n_redrawn_similar:
        click.echo(f"redrawn: {result.n_redrawn_empty} empty mask(s), "
                   f"{result.n_redrawn_similar} too similar to real data")


# ---- medgan evaluate: segmentation benchmark, sample quality, memorisation audit ----
ARM_NAMES = ("real", "real+aug", "real+aug+synthetic", "real+aug+insert", "real+aug+carvemix")


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


@main.group("evaluate")
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
@click.option("--arms", default=",".join(ARM_NAMES),
              help="Comma-separated arms to run, out of: " + ", ".join(ARM_NAMES) + ".")
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
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@_threads_option(fallback=1)  # 1: the same numbers on any machine
def evaluate_segmentation_cmd(data: Path, checkpoint: Path | None, config_path: Path | None,
                              out: Path, train_cases: str, seeds: int, ratio: float, arms: str,
                              fast: bool, iterations: int | None, resume: bool, device: str,
                              seed: int, progress: bool) -> None:
    """Train a MONAI UNet per arm, seed and training regime; compare arms on held-out patients.

    Arms: real (no augmentation), real+aug (standard augmentation, the reference),
    real+aug+synthetic (extra GAN patches), real+aug+insert (GAN lesions pasted into real
    patches), real+aug+carvemix (real lesions copied between training patients).
    """
    from medgan.evaluation import evaluate_segmentation

    result = evaluate_segmentation(
        data, out, checkpoint=checkpoint, config=_eval_config(config_path),
        train_cases=train_cases, seeds=seeds, ratio=ratio,
        arms=[a.strip() for a in arms.split(",") if a.strip()], fast=fast, resume=resume,
        device=device, iterations=iterations, split_seed=seed, threads=None,
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
@_threads_option()
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
@_threads_option()
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


if __name__ == "__main__":  # pragma: no cover
    main()
