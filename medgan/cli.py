"""The ``medgan`` command line: thin click commands that parse options and call the library.

Heavy imports (torch, MONAI) happen inside the commands so ``medgan --help`` is instant. Every
:class:`~medgan.errors.MedganError` becomes one ``Error: ...`` line and exit code 2; Ctrl-C gives
exit code 130 and SIGTERM 143.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from medgan._version import __version__
from medgan.errors import MedganError

DEVICE = click.Choice(["auto", "cpu", "cuda"])


class _Group(click.Group):
    """Turns user errors into one line + exit 2 and interrupts into 130/143."""

    def invoke(self, ctx: click.Context) -> Any:
        def _on_term(signum, frame):  # SIGTERM behaves like Ctrl-C, but exits 143
            raise KeyboardInterrupt(143)

        previous = signal.signal(signal.SIGTERM, _on_term)
        try:
            return super().invoke(ctx)
        except MedganError as err:
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt as err:
            code = err.args[0] if err.args and isinstance(err.args[0], int) else 130
            click.echo("Interrupted.", err=True)
            sys.exit(code)
        finally:
            signal.signal(signal.SIGTERM, previous)


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


def _dump_json(obj: Any, path: str | None) -> None:
    text = json.dumps(obj, indent=2)
    if path in (None, "-"):
        click.echo(text)
    else:
        Path(path).write_text(text + "\n", encoding="utf-8")


@main.command("check-data")
@click.argument("datalist", type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True,
              help="YAML config (modality, label values, patch size, spacing).")
@click.option("--json", "json_out", type=str, default=None,
              help="Also write the report as JSON to this file ('-' = stdout, no table).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
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
        click.echo(f"Error: {report.n_bad} unusable case(s) in {datalist}", err=True)
        sys.exit(1)


def _parse_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    """``--set train.steps=100`` -> ``{"train.steps": 100}`` (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"must look like section.key=value, not {item!r}",
                                     param_hint="--set")
        out[key.strip()] = yaml.safe_load(value)
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
@click.option("--dry-run", is_flag=True, default=False,
              help="Print the resolved config and exit without training.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def train_cmd(config_path: Path | None, data: Path | None, out: Path, resume: bool,
              device: str, seed: int, steps: int | None, overrides: tuple[str, ...],
              skip_bad: bool, dry_run: bool, progress: bool) -> None:
    """Train a DCGAN that generates lesion image + mask pairs for one modality.

    Runs under torchrun for several GPUs/processes: torchrun --nproc-per-node N -m medgan train.
    """
    from medgan.config import load_config

    values = _parse_overrides(overrides)
    if steps is not None:
        values["train.steps"] = steps
    if config_path is None and not resume:
        raise click.UsageError("--config is required (unless --resume continues a run)")
    config = load_config(config_path, values) if config_path is not None else None
    if dry_run:
        import yaml

        click.echo(yaml.safe_dump(config.to_dict() if config else {}, sort_keys=False))
        return
    from medgan.training.trainer import train

    result = train(config, data=data, out=out, resume=resume, device=device, seed=seed,
                   skip_bad=skip_bad, progress=progress)
    if result.grid is not None:
        click.echo(f"trained {result.steps} steps ({result.images_per_s:.1f} images/s)")
        click.echo(f"checkpoint: {result.checkpoint}")
        click.echo(f"samples:    {result.grid}")
        click.echo(f"model card: {result.run_dir / 'MODEL_CARD.md'}")


if __name__ == "__main__":  # pragma: no cover
    main()
