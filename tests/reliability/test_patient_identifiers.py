"""DICOM patient identifiers never reach any output of the whole pipeline.

Two CT series carry a full set of identifiers (patient name, ID and birth date, institution,
study date, accession number, referring physician, and the study, series and instance UIDs).
``check-data --json``, ``train``, ``sample``, ``info`` and ``evaluate quality`` / ``privacy``
run on them; every file they write (NIfTI decompressed, safetensors with their metadata, JSON,
YAML, Markdown, PNG text chunks, TensorBoard event files, the patch cache)
and all console and log output are searched for every identifier.

Not covered here, by design: a case id is the name of its folder (or file), chosen by the user
and copied into reports, checkpoints and logs; a user who names folders after patients will
find those names in the outputs (see docs/reliability.md).
"""

from __future__ import annotations

import gzip
import logging
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from helpers_data import write_dicom_series
from helpers_process import tiny_train_config, write_yaml

from medgan.cli import main

PATIENTS = {
    "case_a": {"PatientName": "Quillfeather^Ottoline", "PatientID": "MRN-5583921",
               "PatientBirthDate": "19491223", "InstitutionName": "Saint Wendeline Klinikum",
               "StudyDate": "20190314", "AccessionNumber": "ACC88211907",
               "ReferringPhysicianName": "Brackenbury^Hortensia"},
    "case_b": {"PatientName": "Vanterpool^Eustace", "PatientID": "MRN-7710346",
               "PatientBirthDate": "19620708", "InstitutionName": "Saint Wendeline Klinikum",
               "StudyDate": "20200917", "AccessionNumber": "ACC55190244",
               "ReferringPhysicianName": "Brackenbury^Hortensia"},
}
UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def identifiers_in(series: Path) -> set[str]:
    """Every identifier value of the written series, each name part on its own too."""
    found: set[str] = set()
    for f in series.iterdir():
        ds = pydicom.dcmread(f)
        for key in (*PATIENTS["case_a"], *UID_TAGS):
            value = str(ds.get(key, "") or "")
            found |= {value, *(p for p in value.replace("^", " ").split() if len(p) >= 5)}
    return {v for v in found if v}


def png_streams(data: bytes) -> list[bytes]:
    """Text chunks (tEXt, zTXt, iTXt, decompressed) and, as raw bytes, the pixel stream."""
    out, idat, pos = [], b"", 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"tEXt":
            out.append(chunk)
        elif kind == b"zTXt":
            key, _, rest = chunk.partition(b"\0")
            out.append(key + zlib.decompress(rest[1:]))
        elif kind == b"iTXt":
            key, _, rest = chunk.partition(b"\0")
            compressed, text = rest[0], rest[2:].split(b"\0", 2)[-1]
            out.append(key + (zlib.decompress(text) if compressed else text))
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return [*out, zlib.decompress(idat)] if idat else out


def readable_forms(path: Path) -> list[bytes]:
    """The bytes of ``path`` plus every decoded form an identifier could hide in."""
    data = path.read_bytes()
    forms = [data]
    if data[:2] == b"\x1f\x8b":
        forms.append(gzip.decompress(data))
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        forms += png_streams(data)
    if path.name.endswith((".nii", ".nii.gz")):
        header = nib.load(str(path)).header
        forms.append(bytes(header.binaryblock))
    return forms


def leaks(text_or_bytes: bytes, identifiers: set[str]) -> list[str]:
    lowered = text_or_bytes.lower()
    return [i for i in identifiers if i.encode().lower() in lowered]


@pytest.fixture
def dicom_cases(tmp_path, make_phantom) -> tuple[Path, set[str]]:
    """Two case folders with neutral names: a CT series in image/ and a NIfTI label each."""
    root = tmp_path / "inputs" / "cases"
    identifiers: set[str] = set()
    for i, (name, patient) in enumerate(PATIENTS.items()):
        phantom = make_phantom(f"p{i}", folder=tmp_path / "phantoms", shape=(40, 40, 18),
                               image_dtype=np.int16, seed=i)
        volume = np.asanyarray(nib.load(phantom.image).dataobj)
        series = write_dicom_series(root / name / "image", volume, phantom.affine, patient)
        (root / name / "label.nii.gz").write_bytes(Path(phantom.label).read_bytes())
        identifiers |= identifiers_in(series)
    assert {"Quillfeather^Ottoline", "MRN-5583921", "19491223", "ACC55190244"} <= identifiers
    assert sum(len(v) > 30 and v.count(".") > 4 for v in identifiers) > 36  # the UIDs
    return root, identifiers


def test_no_identifier_in_any_output(tmp_path, dicom_cases, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    for name, logger in logging.root.manager.loggerDict.items():  # a logging.config.dictConfig
        if name.startswith("medgan") and isinstance(logger, logging.Logger):  # elsewhere in
            monkeypatch.setattr(logger, "disabled", False)  # the session (nbclient) mutes them
    cases, identifiers = dicom_cases
    work = tmp_path / "outputs"
    config = write_yaml(work / "config.yaml", tiny_train_config(steps=4, sample_every=2))
    run, synthetic = work / "run", work / "synthetic"
    commands = [
        ["check-data", cases, "--config", config, "--json", work / "check.json"],
        ["train", "--config", config, "--data", cases, "--out", run, "--device", "cpu"],
        ["sample", "--checkpoint", run, "-n", "6", "--out", synthetic, "--device", "cpu"],
        ["info", run], ["info", synthetic / "dataset.json", "--json"],
        ["info", synthetic / "imagesTr" / "synth_00000.nii.gz"],
        ["evaluate", "quality", "--real", cases, "--synthetic", synthetic, "--out",
         work / "quality" / "report.json", "--no-frd"],
        ["evaluate", "privacy", "--real", cases, "--synthetic", synthetic, "--out",
         work / "privacy"],
    ]
    console = []
    for args in commands:
        result = CliRunner().invoke(main, ["-v", *map(str, args)])
        assert result.exit_code == 0, (args, result.output)
        console.append(result.stdout + result.stderr)
    # log records may legitimately be empty (progress bars instead of INFO lines)
    console.append(caplog.text)
    files = sorted(p for p in work.rglob("*") if p.is_file())
    kinds = {p.name.split(".", 1)[-1] for p in files}
    for expected in ("nii.gz", "safetensors", "json", "yaml", "md", "png"):
        assert expected in kinds, f"no .{expected} output was searched"
    assert any("tfevents" in p.name for p in files), "no TensorBoard event file was searched"
    assert list(run.glob("cache/patches-*.safetensors")), "no patch cache was searched"
    found = {str(p.relative_to(work)): hits for p in files
             for form in readable_forms(p) if (hits := leaks(form, identifiers))}
    found |= {f"console of medgan {c[0]}": hits for c, text in zip(commands, console, strict=False)
              if (hits := leaks(text.encode(), identifiers))}
    assert found == {}
    print(f"{len(identifiers)} identifier strings, {len(files)} files, "
          f"{len(console)} console/log texts searched")  # shown with pytest -s
    # what is copied instead: the user's folder names, as case ids (see docs/reliability.md)
    assert '"case_id": "case_a"' in (work / "check.json").read_text()


def test_the_search_finds_planted_identifiers(tmp_path):
    """Control: the same search finds an identifier in each hiding place it claims to read."""
    from PIL import Image, PngImagePlugin

    secret = {"MRN-5583921"}
    img = nib.Nifti1Image(np.zeros((4, 4, 1), np.float32), np.eye(4))
    img.header["descrip"] = b"MRN-5583921"
    nib.save(img, str(tmp_path / "planted.nii.gz"))
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "MRN-5583921", zip=True)
    Image.new("L", (4, 4)).save(tmp_path / "text.png", pnginfo=text)
    (tmp_path / "log.txt.gz").write_bytes(gzip.compress(b"patient mrn-5583921"))
    for name in ("planted.nii.gz", "text.png", "log.txt.gz"):
        assert any(leaks(f, secret) for f in readable_forms(tmp_path / name)), name
