"""Full-size synthetic cases (``medgan sample --hosts``) from a tiny trained inpainter."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from helpers_data import Phantom, phantom_arrays, write_datalist, write_nifti
from helpers_inpaint import train_inpainter_run

from medgan.augment.inpaint import RandLesionInpaintd
from medgan.augment.placement import PlacementSettings
from medgan.cli import main
from medgan.errors import CheckpointError, ConfigError, DataError
from medgan.sampling import load_generator
from medgan.sampling.cases import mask_source, write_cases
from medgan.sampling.hosts import read_host

#: A host stored LPS-like (x and y flipped) with 2 mm slices: cases must keep its layout.
FLIPPED = np.array([[-1.0, 0, 0, 60], [0, -1.0, 0, 50], [0, 0, 2.0, -10], [0, 0, 0, 1]])


def _phantoms(folder: Path, shapes, affines) -> Path:
    out = []
    for i, (shape, affine) in enumerate(zip(shapes, affines, strict=True)):
        spacing = tuple(float(np.linalg.norm(affine[:3, k])) for k in range(3))
        img, lab, c = phantom_arrays(shape, "ct", 1, spacing, seed=i)
        out.append(Phantom(write_nifti(folder / "imagesTr" / f"h{i}.nii.gz", img, affine),
                           write_nifti(folder / "labelsTr" / f"h{i}.nii.gz", lab, affine),
                           img, lab, affine, c))
    return write_datalist(folder / "dataset.json", out)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """An inpainting run trained for 2 steps on 2D phantoms."""
    root = tmp_path_factory.mktemp("inpaint")
    data = _phantoms(root / "train", [(40, 40, 10)] * 2, [np.eye(4)] * 2)
    return train_inpainter_run(root / "run", data)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hosts")
    return _phantoms(root, [(48, 48, 12), (44, 50, 8)], [np.eye(4), FLIPPED])


def _ras_union(shape, insertions, erase: bool) -> np.ndarray:
    """Union of the placed masks (or erase regions) of a case, in RAS voxel order."""
    out = np.zeros(shape, bool)
    for ins in insertions:
        if erase:
            out[ins.window] |= ins.erase
        else:
            m = ins.mask.reshape(ins.mask.shape + (1,) * (3 - ins.mask.ndim))
            out[tuple(slice(o, o + s) for o, s in zip(ins.offset, m.shape, strict=True))] |= m
    return out


def test_cases_keep_the_host_outside_erased_regions_and_label_exactly(run, hosts, tmp_path):
    out = tmp_path / "cases"
    result = write_cases(run, hosts, 3, out, seed=5, lesions_per_case=2)
    assert result.n == 3 and result.hosts == ["h0", "h1", "h0"]
    data = json.loads((out / "dataset.json").read_text())
    for i, entry in enumerate(data["training"]):
        host = read_host({"image": str(Path(hosts).parent / "imagesTr" / f"{result.hosts[i]}"
                                                                     ".nii.gz"),
                          "label": str(Path(hosts).parent / "labelsTr" / f"{result.hosts[i]}"
                                                                     ".nii.gz"),
                          "case_id": result.hosts[i]})
        img_nii, lab_nii = nib.load(out / entry["image"]), nib.load(out / entry["label"])
        np.testing.assert_array_equal(img_nii.affine, host.image_nii.affine)
        assert img_nii.header.get_zooms() == host.image_nii.header.get_zooms()
        assert img_nii.header["descrip"].tobytes().startswith(b"medgan synthetic")
        image, label = np.asanyarray(img_nii.dataobj), np.asanyarray(lab_nii.dataobj)
        assert image.dtype == host.image.dtype and label.dtype == host.label.dtype
        placed = host.to_file_layout(_ras_union(host.image.shape, result.insertions[i], False))
        erased = host.to_file_layout(_ras_union(host.image.shape, result.insertions[i], True))
        host_image = np.asanyarray(host.image_nii.dataobj)
        host_label = np.asanyarray(host.label_nii.dataobj)
        assert placed.any() and not (placed & (host_label > 0)).any()
        np.testing.assert_array_equal(label, np.where(placed, 1, host_label))
        np.testing.assert_array_equal(image[~erased], host_image[~erased])  # bit for bit
        assert (image[erased] != host_image[erased]).any()
        assert entry["host_case_id"] == result.hosts[i] and len(entry["lesions"]) == 2
    info = data["medgan"]
    assert (out / info["checkpoint"]).resolve() == load_generator(run).checkpoint_path.resolve()
    assert info["checkpoint_sha256"] == load_generator(run).checkpoint_sha256
    assert (out / "contact_sheet.png").is_file()


def test_same_seed_same_files_other_seed_other_files(run, hosts, tmp_path):
    a, b, c = (tmp_path / x for x in "abc")
    write_cases(run, hosts, 2, a, seed=7)
    write_cases(run, hosts, 2, b, seed=7)
    write_cases(run, hosts, 2, c, seed=8)
    for sub in ("imagesTr", "labelsTr"):
        for f in sorted((a / sub).iterdir()):
            assert f.read_bytes() == (b / sub / f.name).read_bytes()
    assert (a / "imagesTr/synth_00000.nii.gz").read_bytes() != \
        (c / "imagesTr/synth_00000.nii.gz").read_bytes()


def test_datalist_loads_with_monai(run, hosts, tmp_path):
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImaged

    out = tmp_path / "cases"
    write_cases(run, hosts, 2, out, mask_source_kind="ellipsoid")
    items = load_decathlon_datalist(str(out / "dataset.json"), data_list_key="training",
                                    base_dir=str(out))
    item = LoadImaged(["image", "label"])(items[1])
    assert item["image"].shape == (44, 50, 8) and float(item["label"].max()) == 1.0


def test_bad_inputs_are_clear(run, hosts, tmp_path, ckpt_2d):
    with pytest.raises(DataError, match="datalist does not exist") as err:
        write_cases(run, tmp_path / "missing.json", 1, tmp_path / "a")
    assert err.value.param == "hosts"
    with pytest.raises(CheckpointError, match="'dcgan' checkpoint") as err:
        write_cases(ckpt_2d, hosts, 1, tmp_path / "b")
    assert err.value.param == "hosts"
    nowhere = PlacementSettings(region="intensity", intensity_range=(5000.0, 6000.0))
    with pytest.raises(DataError, match="no lesion could be placed in any host.*empty region"):
        write_cases(run, hosts, 2, tmp_path / "c", placement=nowhere)
    assert not (tmp_path / "c" / "dataset.json").exists()


def test_hosts_too_small_are_skipped_and_counted(run, tmp_path):
    hosts = _phantoms(tmp_path / "mixed", [(48, 48, 12), (20, 20, 6)], [np.eye(4)] * 2)
    result = write_cases(run, hosts, 2, tmp_path / "out")
    assert result.n == 1 and result.skipped_cases == 1
    assert result.skipped["image smaller than patch"] == 1
    assert len(json.loads((tmp_path / "out/dataset.json").read_text())["training"]) == 1


def test_dictionary_transform_takes_the_checkpoint_path(run, hosts):
    loaded = load_generator(run)
    t = RandLesionInpaintd(generator=str(run), mask_source=mask_source(loaded), prob=1.0)
    t.set_random_state(0)
    host = read_host(json.loads(Path(hosts).read_text())["training"][0] | {
        "image": str(Path(hosts).parent / "imagesTr/h0.nii.gz"),
        "label": str(Path(hosts).parent / "labelsTr/h0.nii.gz"), "case_id": "h0"})
    out = t({"image": host.image[None].copy(), "label": host.label[None].copy()})
    assert (out["label"] > 0).sum() > (host.label > 0).sum() and not t.skipped


def test_cli_hosts_checks_before_work(run, hosts, tmp_path, ckpt_2d):
    runner = CliRunner()
    res = runner.invoke(main, ["sample", "--checkpoint", str(ckpt_2d), "--hosts", str(hosts),
                               "--n", "1", "--out", str(tmp_path / "a")])
    assert res.exit_code == 2 and "needs an inpainting checkpoint" in res.output
    res = runner.invoke(main, ["sample", "--checkpoint", str(run), "--n", "1",
                               "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--hosts" in res.output
    res = runner.invoke(main, ["sample", "--checkpoint", str(run), "--hosts",
                               str(tmp_path / "nope.json"), "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "--hosts: " in res.output and "does not exist" in res.output
    assert not (tmp_path / "d").exists()
    res = runner.invoke(main, ["sample", "--checkpoint", str(run), "--hosts", str(hosts),
                               "--region", "intensity", "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "--intensity-range" in res.output
    res = runner.invoke(main, ["sample", "--checkpoint", str(run), "--hosts", str(hosts),
                               "--n", "2", "--lesions-per-case", "2", "--out",
                               str(tmp_path / "c"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "wrote 2 full-size case(s), 4 lesion(s) inserted" in res.output


#: A host at half the training spacing in-plane (0.5 mm) with 2 mm slices.
FINE = np.diag([0.5, 0.5, 2.0, 1.0])


def test_hosts_at_another_spacing_keep_the_lesion_size_in_mm(run, tmp_path):
    fine = _phantoms(tmp_path / "fine", [(96, 96, 8)], [FINE])
    patch = load_generator(run).patch_size
    outs = {mode: write_cases(run, fine, 2, tmp_path / mode, seed=3, host_spacing=mode)
            for mode in ("resample", "native")}
    data = json.loads((tmp_path / "resample" / "dataset.json").read_text())
    assert data["medgan"]["host_spacing"] == "resample"
    assert data["medgan"]["training_spacing_mm"][:2] == [1.0, 1.0]
    assert all(e["resampled"] and e["host_spacing_mm"] == [0.5, 0.5, 2.0]
               for e in data["training"])
    assert not any(e["resampled"] for e in json.loads(
        (tmp_path / "native" / "dataset.json").read_text())["training"])
    host = read_host({"image": str(tmp_path / "fine/imagesTr/h0.nii.gz"),
                      "label": str(tmp_path / "fine/labelsTr/h0.nii.gz"), "case_id": "h0"})
    for i, case in enumerate(outs["resample"].insertions):
        # the generator's 1 mm patch covers 2 patch sizes of 0.5 mm voxels
        assert all([s.stop - s.start for s in ins.window[:2]] == [2 * patch] * 2
                   for ins in case)
        image = np.asanyarray(nib.load(tmp_path / "resample" / data["training"][i]["image"])
                              .dataobj)
        label = np.asanyarray(nib.load(tmp_path / "resample" / data["training"][i]["label"])
                              .dataobj)
        placed = _ras_union(host.image.shape, outs["resample"].insertions[i], False)
        erased = _ras_union(host.image.shape, outs["resample"].insertions[i], True)
        assert not (placed & ~erased).any()  # the erase region covers every lesion voxel
        np.testing.assert_array_equal(label, np.where(placed, 1, host.label))
        np.testing.assert_array_equal(image[~erased], host.image[~erased])  # bit for bit
        assert (image[erased] != host.image[erased]).mean() > 0.5  # the generator filled them
    assert all([s.stop - s.start for s in ins.window[:2]] == [patch] * 2
               for case in outs["native"].insertions for ins in case)
    # the same seeds draw the same shapes: 4x the voxels at half the spacing, so the same mm^2
    resampled = [int(i.mask.sum()) for c in outs["resample"].insertions for i in c]
    native = [int(i.mask.sum()) for c in outs["native"].insertions for i in c]
    assert [i.seeds for c in outs["resample"].insertions for i in c] == \
        [i.seeds for c in outs["native"].insertions for i in c]
    for r, n in zip(resampled, native, strict=True):
        assert 3.0 * n <= r <= 5.0 * n


def test_hosts_at_the_training_spacing_are_not_resampled(run, hosts, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_cases(run, hosts, 2, a, seed=4, host_spacing="resample")
    write_cases(run, hosts, 2, b, seed=4, host_spacing="native")
    for sub in ("imagesTr", "labelsTr"):
        for f in sorted((a / sub).iterdir()):
            assert f.read_bytes() == (b / sub / f.name).read_bytes()
    with pytest.raises(ConfigError, match="host_spacing must be one of resample, native") as err:
        write_cases(run, hosts, 1, tmp_path / "c", host_spacing="nearest")
    assert err.value.param == "host_spacing" and not (tmp_path / "c").exists()


def test_cli_host_spacing_option(run, tmp_path):
    fine = _phantoms(tmp_path / "fine", [(96, 96, 8)], [FINE])
    runner = CliRunner()
    res = runner.invoke(main, ["sample", "--help"])
    assert "--host-spacing [resample|native]" in res.output and "default: resample" in res.output
    res = runner.invoke(main, ["sample", "--checkpoint", str(run), "--hosts", str(fine),
                               "--n", "1", "--out", str(tmp_path / "a"), "--host-spacing",
                               "native", "--no-progress"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert data["medgan"]["host_spacing"] == "native" and not data["training"][0]["resampled"]
    res = runner.invoke(main, ["sample", "--checkpoint", str(run), "--hosts", str(fine),
                               "--host-spacing", "bogus", "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--host-spacing" in res.output and "Traceback" not in res.output


def test_dicom_hosts_with_seg_and_nifti_labels(run, tmp_path):
    """DICOM series hosts (SEG label, NIfTI label) give NIfTI cases on the series' geometry,
    the host's HU outside the erased regions, exact labels, and no patient identifier."""
    from helpers_data import DICOM_PATIENT, spacing_affine, write_dicom_series
    from helpers_dicom import write_seg

    from medgan.data.transforms import read_image

    affine = spacing_affine((1.0, 1.0, 2.0))
    img, lab, _ = phantom_arrays((48, 48, 6), "ct", 1, (1.0, 1.0, 2.0), seed=3)
    series = write_dicom_series(tmp_path / "dcm" / "pat" / "image", img, affine)
    write_seg(tmp_path / "dcm" / "pat" / "seg.dcm", series, lab)
    write_nifti(tmp_path / "dcm" / "pat2" / "label.nii.gz", lab, affine)
    hosts = tmp_path / "dcm" / "dataset.json"
    hosts.write_text(json.dumps({"training": [
        {"image": "pat/image", "label": "pat/seg.dcm", "case_id": "pat", "roi_names": ["*"]},
        {"image": "pat/image", "label": "pat2/label.nii.gz", "case_id": "pat2"}]}))
    out = tmp_path / "cases"
    result = write_cases(run, hosts, 2, out, seed=1, lesions_per_case=2)
    assert result.n == 2
    data = json.loads((out / "dataset.json").read_text())
    reference = read_image(str(series))
    for i, entry in enumerate(data["training"]):
        image_nii, label_nii = nib.load(out / entry["image"]), nib.load(out / entry["label"])
        np.testing.assert_allclose(image_nii.affine, np.asarray(reference.affine), atol=1e-4)
        image, label = np.asarray(image_nii.dataobj), np.asarray(label_nii.dataobj)
        host_image = np.asarray(reference[0], np.float32)
        host = read_host({"image": str(series), "label": str(
            tmp_path / "dcm" / ("pat/seg.dcm" if i == 0 else "pat2/label.nii.gz")),
            "case_id": entry["host_case_id"], "roi_names": ["*"]})
        erased = host.to_file_layout(_ras_union(host.image.shape, result.insertions[i], True))
        placed = host.to_file_layout(_ras_union(host.image.shape, result.insertions[i], False))
        original = host.to_file_layout(host.label)
        assert original.sum() == lab.sum()  # the label came through on the series grid
        np.testing.assert_array_equal(label, np.where(placed, 1, original))
        np.testing.assert_array_equal(image[~erased], host_image[~erased])
        assert (image[erased] != host_image[erased]).any()
        for f in (out / entry["image"], out / entry["label"]):
            raw = gzip.decompress(f.read_bytes())
            assert all(v.encode() not in raw for v in DICOM_PATIENT.values())
    assert all(v not in (out / "dataset.json").read_text() for v in DICOM_PATIENT.values())


def test_a_nifti_host_with_a_dicom_label_is_refused(run, hosts, tmp_path):
    folder = Path(hosts).parent
    bad = tmp_path / "bad.json"
    (tmp_path / "seg.dcm").write_bytes(b"\0" * 132)
    bad.write_text(json.dumps({"training": [{"image": str(folder / "imagesTr/h0.nii.gz"),
                                             "label": str(tmp_path / "seg.dcm"),
                                             "case_id": "h0"}]}))
    with pytest.raises(DataError, match="seg.dcm: host case 'h0' has a NIfTI image, so its "
                                        "label must be a NIfTI file too"):
        write_cases(run, bad, 1, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_cases_as_dicom_series_with_a_seg(run, hosts, tmp_path):
    """--format dicom: each case a new synthetic series on the host's geometry plus a SEG of
    its label; read back with medgan's own readers it equals the NIfTI case."""
    import pydicom
    from monai.transforms import Orientation

    from medgan.data.transforms import RAS_LABELS, read_image, read_label

    ras = Orientation(axcodes="RAS", labels=RAS_LABELS)

    nifti, dicom = tmp_path / "nifti", tmp_path / "dicom"
    write_cases(run, hosts, 2, nifti, seed=9, lesions_per_case=2)
    result = write_cases(run, hosts, 2, dicom, seed=9, lesions_per_case=2, file_format="dicom")
    assert result.n == 2 and not (dicom / "imagesTr").exists()
    a = json.loads((nifti / "dataset.json").read_text())["training"]
    b = json.loads((dicom / "dataset.json").read_text())["training"]
    for ea, eb in zip(a, b, strict=True):
        assert eb["image"].startswith("./dicomTr/synth_") and eb["label"].endswith("seg/SEG.dcm")
        assert eb["lesions"] == ea["lesions"] and eb["synthetic"]
        ref_image = ras(read_image(str(nifti / ea["image"])))
        ref_label = ras(read_image(str(nifti / ea["label"])))
        case = {"image": str(dicom / eb["image"]), "label": str(dicom / eb["label"]),
                "roi_names": eb["roi_names"]}
        image = read_image(case["image"])
        label = ras(read_label(case, image)[0])
        image = ras(image)
        np.testing.assert_allclose(np.asarray(image.affine), np.asarray(ref_image.affine),
                                   atol=1e-3)
        np.testing.assert_allclose(np.asarray(image[0]), np.asarray(ref_image[0]), atol=0.51)
        np.testing.assert_array_equal(np.asarray(label[0]) > 0, np.asarray(ref_label[0]) > 0)
        first = pydicom.dcmread(next((dicom / eb["image"]).iterdir()), stop_before_pixels=True)
        assert first.PatientName == "SYNTHETIC^MEDGAN" and "SYNTHETIC" in first.SeriesDescription
    with pytest.raises(ConfigError, match="file_format must be one of nifti, dicom") as err:
        write_cases(run, hosts, 1, tmp_path / "x", file_format="png")
    assert err.value.param == "format"


def test_cli_hosts_format_dicom(run, hosts, tmp_path):
    res = CliRunner().invoke(main, ["sample", "--checkpoint", str(run), "--hosts", str(hosts),
                                    "--n", "1", "--format", "dicom", "--out", str(tmp_path / "a"),
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a" / "dicomTr" / "synth_00000" / "seg" / "SEG.dcm").is_file()
    res = CliRunner().invoke(main, ["sample", "--checkpoint", str(run), "--hosts", str(hosts),
                                    "--max-similarity", "0.9", "--real-data", str(hosts),
                                    "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--max-similarity does not apply with --hosts" in res.output


def test_contact_sheet_tiles_cover_the_field_of_view_in_mm(run, tmp_path):
    """A tile covers twice the generator's field of view: for a 0.5 mm host of a 1 mm
    checkpoint that is 4 patch sizes of host voxels, so the whole 96-voxel slice fits and is
    shown at half its resolution; tiles keep one size across hosts of different spacing."""
    from medgan.sampling.cases import _sheet_row

    mixed = _phantoms(tmp_path / "mixed", [(96, 96, 8), (48, 48, 8)], [FINE, np.eye(4)])
    result = write_cases(run, mixed, 2, tmp_path / "out", seed=2)
    assert result.n == 2 and result.contact_sheet.is_file()
    loaded = load_generator(run)
    host = read_host({"image": str(tmp_path / "mixed/imagesTr/h0.nii.gz"),
                      "label": str(tmp_path / "mixed/labelsTr/h0.nii.gz"), "case_id": "h0"})
    tiles = _sheet_row(host, host.image, host.label, result.insertions[0][0], loaded)
    p = loaded.patch_size
    assert all(t.shape == (2, 2 * p, 2 * p) for t in tiles)
    z = int(result.insertions[0][0].window[-1])
    body = int((loaded.intensity.forward(host.image[None, :, :, z].astype(np.float32))[0]
                > -0.99).sum())
    shown = int((tiles[0][0] > -0.99).sum())
    assert abs(shown - body / 4) < 0.15 * body / 4  # the whole slice, at half the resolution
