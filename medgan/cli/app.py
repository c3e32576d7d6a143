"""The ``medgan`` group and its data, training and sampling commands.

Heavy imports (torch, MONAI) happen inside the commands so ``medgan --help`` is instant. Every
:class:`~medgan.errors.MedganError` becomes one ``Error: ...`` line and exit code 2; Ctrl-C gives
exit code 130 and SIGTERM 143.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import click

from medgan._version import __version__
from medgan.atomic import write_text_atomic
from medgan.cli.signals import redeliver_lost_interrupt
from medgan.errors import DataError, MedganError, OutputError

DEVICE = click.Choice(["auto", "cpu", "cuda"])
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
#: Library parameter names -> the flags that set them (library errors name parameters).
FLAGS = {"overrides": "--set", "real_datalist": "--real-data", "n": "--n",
         "mask_source_kind": "--mask-source",
         "postprocess": "--min-lesion-voxels"}


def _flag(param: str) -> str:
    return FLAGS.get(param, "--" + param.replace("_", "-"))


def user_message(err: MedganError) -> str:
    """A library error as the CLI user should read it: parameters spelt as flags."""
    text = err.shown_as(_flag(err.param)) if err.param else err.message
    return re.sub(r"`([a-z_]+)`", lambda m: _flag(m.group(1)), text)


class _Group(click.Group):
    """Turns user errors into one line + exit 2 and interrupts into 130/143."""

    def invoke(self, ctx: click.Context) -> Any:
        def _on_term(signum, frame):  # SIGTERM behaves like Ctrl-C, but exits 143
            raise KeyboardInterrupt(143)

        previous = signal.signal(signal.SIGTERM, _on_term)
        previous_hook, sys.unraisablehook = sys.unraisablehook, redeliver_lost_interrupt
        try:
            return super().invoke(ctx)
        except MedganError as err:
            click.echo(f"Error: {user_message(err)}", err=True)
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


def threads_option(fallback: int | None = None, config_key: str | None = None) -> Any:
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
@threads_option()
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


def parse_overrides(items: tuple[str, ...]) -> dict[str, Any]:
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
@threads_option(config_key="train.threads")
def train_cmd(config_path: Path | None, data: Path | None, out: Path, resume: bool,
              device: str, seed: int, steps: int | None, overrides: tuple[str, ...],
              skip_bad: bool, compile_models: bool, dry_run: bool, progress: bool) -> None:
    """Train a DCGAN that generates lesion image + mask pairs for one modality.

    Runs under torchrun for several GPUs/processes: torchrun --nproc-per-node N -m medgan train.
    """
    from medgan.config import load_config
    from medgan.runs import plan_run, resolve_run_config

    values = parse_overrides(overrides)
    if steps is not None:
        values["train.steps"] = steps
    if compile_models:
        values["train.compile"] = True
    # everything a user can get wrong is checked here, before torch loads
    plan = plan_run(out, resume, probe=os.environ.get("RANK", "0") == "0")  # torchrun: rank 0
    config = load_config(config_path, values) if config_path is not None else None
    config = resolve_run_config(plan, config, values if config is None else None)
    if data is not None:
        check_datalist(data, skip_bad)
    if dry_run:
        import yaml

        click.echo(yaml.safe_dump(config.to_dict(), sort_keys=False))
        return
    from medgan.training.trainer import train

    result = train(config if config_path is not None else None, data=data, out=out,
                   resume=resume, device=device, seed=seed, skip_bad=skip_bad,
                   progress=progress, overrides=values if config_path is None else None)
    if result.grid is not None:
        click.echo(f"trained {result.steps} steps ({result.images_per_s:.1f} images/s)")
        click.echo(f"checkpoint: {result.checkpoint}")
        click.echo(f"samples:    {result.grid}")
        click.echo(f"model card: {result.run_dir / 'MODEL_CARD.md'}")


def _check_cases_options(kind: str, hosts: Path | None, max_similarity: float | None
                         ) -> None:
    """Cross-option checks of ``medgan sample`` with an inpainting checkpoint / --hosts."""
    if kind != "inpaint":
        raise click.UsageError(f"--hosts needs an inpainting checkpoint (model.kind: inpaint); "
                               f"--checkpoint holds a {kind!r} model")
    if hosts is None:
        raise click.UsageError("an inpainting checkpoint inserts lesions into real scans: pass "
                               "--hosts DATALIST")
    if max_similarity is not None:
        raise click.UsageError("--max-similarity does not apply with --hosts")


def check_datalist(data: Path, skip_bad: bool = False) -> None:
    """Read the datalist (file paths and pairs only; torch-free) so that a wrong ``--data``
    is reported before anything heavy loads."""
    from medgan.data.datalist import load_datalist

    load_datalist(data, [] if skip_bad else None)


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
@click.option("--format", "file_format", type=click.Choice(["nifti", "dicom"]), default="nifti",
              help="nifti: imagesTr/ + labelsTr/ NIfTI pairs; dicom: a DICOM series + DICOM SEG "
                   "per sample (or full-size case) in dicomTr/ (new UIDs, marked synthetic).")
@click.option("--min-lesion-diameter-mm", type=click.FloatRange(min=0.0), default=None,
              help="Redraw samples whose lesion is smaller than a disc (2D) / ball (3D) of this "
                   "diameter in mm (default: 3); 0 keeps every size.")
@click.option("--hosts", type=click.Path(path_type=Path), default=None,
              help="Inpainting checkpoints: datalist of real host scans (NIfTI image or DICOM "
                   "series, + label); "
                   "writes N full-size cases, each a host with lesions inpainted into it.")
@click.option("--lesions-per-case", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --hosts: lesions inserted per case (those that fit).")
@click.option("--mask-source", type=click.Choice(["real", "ellipsoid"]), default=None,
              help="With --hosts: lesion shapes, the checkpoint's training masks deformed "
                   "(real) or ellipsoids sized like them; default: the checkpoint's setting.")
@click.option("--region", type=click.Choice(["body", "intensity", "anywhere"]), default="body",
              show_default=True,
              help="With --hosts: where lesions may go: inside the automatic body mask, where "
                   "the image lies within --intensity-range, or anywhere in the scan.")
@click.option("--intensity-range", type=(float, float), default=None,
              help="With --region intensity: LOW HIGH in image units (e.g. HU).")
@click.option("--margin-mm", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              help="With --hosts: smallest distance of a new lesion from existing lesions.")
@click.option("--host-spacing", type=click.Choice(["resample", "native"]), default="resample",
              show_default=True,
              help="With --hosts whose voxel spacing differs from the checkpoint's training "
                   "spacing: resample (the generator's patch is resampled to the training "
                   "spacing and back, so lesions keep their size in mm) or native (work at the "
                   "host's voxel scale: lesions grow or shrink in mm).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@threads_option()
def sample_cmd(checkpoint: Path, n: int, out: Path, seed: int, batch_size: int, device: str,
               ema: bool, overwrite: bool, max_similarity: float | None, real_data: Path | None,
               min_lesion_voxels: int | None, keep_largest: bool, file_format: str,
               min_lesion_diameter_mm: float | None,
               hosts: Path | None, lesions_per_case: int, mask_source: str | None,
               region: str, intensity_range: tuple[float, float] | None, margin_mm: float,
               host_spacing: str, progress: bool) -> None:
    """Generate N synthetic lesion image + mask pairs from a checkpoint as a MONAI dataset.

    Images are written in physical units (HU, SUV, MR scale) with the training spacing, masks
    as uint8; the same checkpoint and --seed give byte-identical files. With an inpainting
    checkpoint and --hosts: N full-size cases (host scans with inpainted lesions).
    """
    if max_similarity is not None and real_data is None:
        raise click.UsageError("--max-similarity needs --real-data (the real training data)")
    # checked before torch loads: the checkpoint, the output folder, the real datalist
    from medgan.checkpoint.files import read_sidecar, resolve_checkpoint
    from medgan.checkpoint.metadata import read_spec
    from medgan.sampling.output import prepare_out

    folder = resolve_checkpoint(checkpoint)
    kind = read_spec(read_sidecar(folder), folder).kind
    if kind == "inpaint" or hosts is not None:
        _check_cases_options(kind, hosts, max_similarity)
        if region == "intensity" and intensity_range is None:
            raise click.UsageError("--region intensity needs --intensity-range LOW HIGH")
        prepare_out(out, overwrite)
        try:
            check_datalist(hosts)
        except DataError as err:
            raise DataError(err.message, param="hosts") from None
        from medgan.augment.placement import PlacementSettings

        placement = PlacementSettings(region, intensity_range, margin_mm=margin_mm)
        from medgan.sampling.cases import write_cases

        cases = write_cases(checkpoint, hosts, n, out, seed=seed,
                            lesions_per_case=lesions_per_case, device=device, use_ema=ema,
                            overwrite=overwrite, mask_source_kind=mask_source,
                            placement=placement, host_spacing=host_spacing,
                            file_format=file_format)
        click.echo(f"wrote {cases.n} full-size case(s), "
                   f"{sum(map(len, cases.insertions))} lesion(s) inserted")
        if cases.skipped:
            click.echo("not placed: " + ", ".join(f"{r} ({c})" for r, c in cases.skipped.items()))
        click.echo(f"datalist:      {cases.datalist}")
        click.echo(f"contact sheet: {cases.contact_sheet}")
        return
    prepare_out(out, overwrite)
    if real_data is not None:
        check_datalist(real_data)
    from medgan.sampling import MaskPostprocess, sample

    size = {} if min_lesion_diameter_mm is None else {"min_diameter_mm": min_lesion_diameter_mm}
    post = MaskPostprocess(min_size=min_lesion_voxels, keep_largest=keep_largest, **size)
    result = sample(checkpoint, n, out, seed=seed, batch_size=batch_size, device=device,
                    use_ema=ema, overwrite=overwrite, max_similarity=max_similarity,
                    real_datalist=real_data, progress=progress, postprocess=post,
                    file_format=file_format)
    click.echo(f"wrote {result.n} pairs ({result.samples_per_s:.1f} samples/s)")
    click.echo(f"datalist:      {result.datalist}")
    click.echo(f"contact sheet: {result.contact_sheet}")
    if result.n_redrawn_empty or result.n_redrawn_similar or result.n_redrawn_small:
        click.echo(f"redrawn: {result.n_redrawn_empty} empty mask(s), "
                   f"{result.n_redrawn_small} lesion(s) below {post.min_diameter_mm:g} mm, "
                   f"{result.n_redrawn_similar} too similar to real data")
