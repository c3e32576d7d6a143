"""Catalogue of bad inputs, each run through the CLI: one clean ``Error:`` line, never a crash.

Exit codes, the same for every input:

* ``medgan check-data``: 2 when the datalist or config itself is unusable (nothing to check);
  1 when it checked the cases and reports unusable ones in its table; 0 when the only findings
  are warnings (e.g. a case without lesion).
* ``medgan train``: 2 for any bad input; the ``--out`` folder is left empty (or never made).
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers_data import config_dict, write_datalist, write_nifti

from medgan.cli import main

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# JPEG Lossless (process 14): no decoder comes with medgan's own dependencies (highdicom brings
# a JPEG-LS one, pillow a JPEG 2000 one); pylibjpeg-libjpeg from medgan[dicom] decodes it
JPEGLS_SERIES = SHARED_DATA / "dicom" / "vendors" / "generic" / "compressed_jpeg" / "001"


@dataclass
class Scenario:
    """A bad input: what to pass and which file/option the error must name."""

    datalist: Path
    config: Path
    names: list[str]  # every string must appear in the error (or warning) line


@dataclass
class Env:
    """Builds datasets and configs for one test in ``root``."""

    root: Path
    make_phantom: Callable
    make_config: Callable
    phantoms: list = field(default_factory=list)

    def dataset(self, n: int = 2, **kwargs) -> Path:
        """``n`` good cases (``case_000`` ...) and their dataset.json."""
        self.phantoms = [
            self.make_phantom(f"case_{i:03d}", folder=self.root / "ds", seed=i, **kwargs)
            for i in range(n)
        ]
        return write_datalist(self.root / "ds" / "dataset.json", self.phantoms)

    def bad_image(self, writer: Callable[[Path], None]) -> Scenario:
        """Two cases, the second one's image replaced by ``writer``."""
        datalist = self.dataset()
        target = Path(self.phantoms[1].image)
        writer(target)
        return Scenario(datalist, self.make_config(), [str(target)])

    def bad_label(self, change: Callable) -> Scenario:
        """Two cases, the second one's label replaced: ``change(phantom) -> (label, affine)``."""
        datalist = self.dataset()
        phantom = self.phantoms[1]
        write_nifti(phantom.label, *change(phantom))
        return Scenario(datalist, self.make_config(), [str(phantom.label)])

    def bad_json(self, content: str) -> Scenario:
        datalist = self.dataset()
        datalist.write_text(content)
        return Scenario(datalist, self.make_config(), [str(datalist)])

    def bad_config(self, names: list[str], raw=None, text: str | bytes | None = None,
                   **data) -> Scenario:
        datalist = self.dataset()
        config = self.make_config(raw=raw, **data)
        if text is not None:
            config.write_bytes(text if isinstance(text, bytes) else text.encode())
        return Scenario(datalist, config, [str(config), *names])


def image_with(env: Env, change: Callable[[np.ndarray], np.ndarray]) -> Scenario:
    def write(path: Path) -> None:
        write_nifti(path, change(env.phantoms[1].image_array.copy()), env.phantoms[1].affine)

    return env.bad_image(write)


def set_voxel(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def change(a: np.ndarray) -> np.ndarray:
        a[24, 24, 6] = value
        return a

    return change


def truncated(path: Path) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def text_file(path: Path) -> None:
    path.write_text("patient,lesion volume\nA,12.5\nB,3.1\n")


def two_d(env: Env) -> Scenario:
    return image_with(env, lambda a: a[:, :, 6])


def five_d(env: Env) -> Scenario:
    return image_with(env, lambda a: np.stack([a, a], axis=-1)[..., None, :])


def constant(env: Env) -> Scenario:
    return image_with(env, lambda a: np.full_like(a, 40.0))


def label_change(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Env], Scenario]:
    return lambda env: env.bad_label(
        lambda p: (change(p.label_array.astype(np.float32)), p.affine)
    )


def label_shifted(env: Env) -> Scenario:
    def shift(phantom) -> tuple[np.ndarray, np.ndarray]:
        affine = phantom.affine.copy()
        affine[:3, 3] += 5.0  # same shape, 5 mm off
        return phantom.label_array, affine

    return env.bad_label(shift)


def no_lesion(env: Env) -> Scenario:
    datalist = env.dataset(n=1)
    label = env.phantoms[0].label
    write_nifti(label, np.zeros_like(env.phantoms[0].label_array), env.phantoms[0].affine)
    return Scenario(datalist, env.make_config(), [str(label)])


def missing_file(env: Env) -> Scenario:
    datalist = env.dataset()
    Path(env.phantoms[1].image).unlink()
    return Scenario(datalist, env.make_config(), [str(env.phantoms[1].image)])


def escaping(env: Env) -> Scenario:
    datalist = env.dataset()
    shutil.copy(env.phantoms[1].image, env.root / "outside.nii.gz")
    content = json.loads(datalist.read_text())
    content["training"][1]["image"] = "../outside.nii.gz"
    datalist.write_text(json.dumps(content))
    return Scenario(datalist, env.make_config(), [str(datalist), "../outside.nii.gz",
                                                  "points outside"])


def tiny_scan(env: Env) -> Scenario:
    datalist = env.dataset(n=1, shape=(8, 8, 4), lesion_radius_mm=2.5, lesion_center=(4, 4, 2))
    config = env.make_config(patch_size=64, min_lesion_voxels=1)
    return Scenario(datalist, config, [str(env.phantoms[0].image), "data.patch_size=64"])


def empty_dicom_case_folder(env: Env) -> Scenario:
    root = env.root / "dicom_cases"
    phantom = env.make_phantom()
    (root / "pat_1" / "image").mkdir(parents=True)
    shutil.copy(phantom.label, root / "pat_1" / "label.nii.gz")
    return Scenario(root, env.make_config(), [str(root / "pat_1" / "image"), "empty"])


def empty_dicom_in_json(env: Env) -> Scenario:
    datalist = env.dataset()
    (datalist.parent / "series").mkdir()
    content = json.loads(datalist.read_text())
    content["training"][1]["image"] = "series"
    datalist.write_text(json.dumps(content))
    return Scenario(datalist, env.make_config(), [str(datalist.parent / "series"), "empty"])


def compressed_dicom(env: Env) -> Scenario:
    datalist = env.dataset(n=1)
    content = json.loads(datalist.read_text())
    content["training"][0]["image"] = str(JPEGLS_SERIES)
    datalist.write_text(json.dumps(content))
    return Scenario(datalist, env.make_config(), [str(JPEGLS_SERIES),
                                                  "pip install 'medgan[dicom]'"])


def jpegls_unusable() -> str | None:
    """Why the compressed-DICOM case cannot run here (None = it can)."""
    if not JPEGLS_SERIES.is_dir():
        return f"{JPEGLS_SERIES} is absent"
    from pydicom.pixels.decoders import JPEGLosslessSV1Decoder

    if JPEGLosslessSV1Decoder.is_available:
        return "a JPEG Lossless decoder is installed"
    return None


def _wrong_gzip_content(path: Path) -> None:
    path.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))


def case(id_: str, build: Callable[[Env], Scenario], check: int, *marks) -> object:
    return pytest.param(build, check, id=id_, marks=marks)


# (builder, check-data exit code); train always exits 2
CATALOGUE = [
    case("corrupt-nifti", lambda e: e.bad_image(random_bytes), 1),
    case("gzip-not-nifti", lambda e: e.bad_image(_wrong_gzip_content), 1),
    case("truncated-nifti", lambda e: e.bad_image(truncated), 1),
    case("text-file-renamed", lambda e: e.bad_image(text_file), 1),
    case("2d-nifti", two_d, 1),
    case("5d-nifti", five_d, 1),
    case("label-shape-mismatch", label_change(lambda la: la[:, :, :10]), 1),
    case("label-geometry-mismatch", label_shifted, 1),
    case("nan-voxels", lambda e: image_with(e, set_voxel(np.nan)), 1),
    case("inf-voxels", lambda e: image_with(e, set_voxel(np.inf)), 1),
    case("constant-image", constant, 1),
    case("label-non-integer", label_change(lambda la: la * 0.5), 1),
    case("label-negative", label_change(lambda la: -la), 1),
    case("label-no-lesion", no_lesion, 0),
    case("missing-file", missing_file, 1),
    case("path-escapes-folder", escaping, 2),
    case("malformed-json", lambda e: e.bad_json('{"training": [{"image": '), 2),
    case("empty-training", lambda e: e.bad_json('{"training": []}'), 2),
    case("no-training-key", lambda e: e.bad_json('{"validation": []}'), 2),
    case("negative-patch-size", lambda e: e.bad_config(["data.patch_size", "-32"],
                                                       patch_size=-32), 2),
    case("patch-size-48", lambda e: e.bad_config(["data.patch_size", "48"], patch_size=48), 2),
    case("unknown-modality", lambda e: e.bad_config(
        ["modality"], raw={**config_dict(), "modality": "xray"}), 2),
    case("unknown-key", lambda e: e.bad_config(["data.pach_size", "unknown option"],
                                               pach_size=64), 2),
    case("percentiles-reversed", lambda e: e.bad_config(
        ["intensity.percentiles", "[99.5, 0.5]"],
        raw={**config_dict("mr"), "intensity": {"percentiles": [99.5, 0.5]}}), 2),
    case("wgan-gp-with-batch-norm", lambda e: e.bad_config(
        ["model.d_norm", "wgan-gp"],
        raw={**config_dict(), "train": {**config_dict()["train"], "loss": "wgan-gp"}}), 2),
    case("empty-config", lambda e: e.bad_config(["empty"], text=""), 2),
    case("non-yaml-config", lambda e: e.bad_config(["not valid YAML"],
                                                   text="modality: ct\ndata: [32, \n"), 2),
    case("binary-config", lambda e: e.bad_config(["not valid YAML"],
                                                 text=b"\x89PNG\r\n\x1a\n\xff\xfe"), 2),
    case("patch-larger-than-scan", tiny_scan, 1),
    case("dicom-case-folder-empty", empty_dicom_case_folder, 2),
    case("dicom-folder-empty", empty_dicom_in_json, 1),
    case("dicom-compressed-no-decoder", compressed_dicom, 1,
         pytest.mark.skipif(jpegls_unusable() is not None, reason=str(jpegls_unusable()))),
]


@pytest.fixture
def env(tmp_path, make_phantom, make_config):
    return Env(tmp_path, make_phantom, make_config)


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


def assert_clean_failure(result, code: int, names: list[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), output
    assert result.exit_code == code, output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for name in names:
        assert name in errors[0], f"{name!r} not in {errors[0]!r}"


@pytest.mark.parametrize(("build", "check_code"), CATALOGUE)
def test_check_data(env, build, check_code):
    scenario = build(env)
    before = snapshot(env.root)
    result = CliRunner().invoke(
        main, ["check-data", str(scenario.datalist), "--config", str(scenario.config),
               "--no-progress"]
    )
    if check_code == 0:  # only warnings: usable, reported in the table
        assert result.exit_code == 0, result.output
        assert "Error" not in result.stderr
        warnings = [ln for ln in result.stdout.splitlines() if ln.startswith("warning:")]
        assert any(all(n in w for n in scenario.names) for w in warnings), result.stdout
    else:
        assert_clean_failure(result, check_code, scenario.names)
    assert snapshot(env.root) == before  # check-data writes nothing


@pytest.mark.parametrize(("build", "check_code"), CATALOGUE)
def test_train(env, build, check_code):
    scenario = build(env)
    out = env.root / "run"
    result = CliRunner().invoke(
        main, ["train", "--config", str(scenario.config), "--data", str(scenario.datalist),
               "--out", str(out), "--steps", "1", "--device", "cpu", "--no-progress"]
    )
    assert_clean_failure(result, 2, scenario.names)
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))


def test_set_override_errors_are_clean(make_config, tmp_path):
    """``--set`` values that are not YAML, or that reach below a value, are usage errors."""
    config = make_config()
    for item, text in [("train.steps=[", "not valid YAML"),
                       ("train.steps.x=1", "'steps' is a value, not a section"),
                       ("steps", "must look like section.key=value")]:
        result = CliRunner().invoke(main, ["train", "--config", str(config), "--set", item,
                                           "--out", str(tmp_path / "run"), "--dry-run"])
        assert_clean_failure(result, 2, [text])
    assert not (tmp_path / "run").exists()


def test_config_must_exist(tmp_path, make_dataset):
    datalist = make_dataset(n=1)
    result = CliRunner().invoke(main, ["check-data", str(datalist), "--config",
                                       str(tmp_path / "missing.yaml")])
    assert_clean_failure(result, 2, [str(tmp_path / "missing.yaml"), "does not exist"])


def test_datalist_must_exist(tmp_path, make_config):
    result = CliRunner().invoke(main, ["check-data", str(tmp_path / "nope.json"), "--config",
                                       str(make_config())])
    assert_clean_failure(result, 2, [str(tmp_path / "nope.json"), "does not exist"])


def test_all_cases_missing_names_a_file(env):
    datalist = env.dataset(n=1)
    Path(env.phantoms[0].label).unlink()
    result = CliRunner().invoke(main, ["check-data", str(datalist), "--config",
                                       str(env.make_config())])
    assert_clean_failure(result, 2, ["no usable case left", str(env.phantoms[0].label)])


def test_the_good_cases_of_the_catalogue_pass(env):
    """Control: without the bad input the same dataset checks clean, so each failure above is
    caused by its bad input alone."""
    datalist = env.dataset()
    result = CliRunner().invoke(main, ["check-data", str(datalist), "--config",
                                       str(env.make_config()), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
