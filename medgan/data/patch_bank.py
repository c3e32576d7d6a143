"""The patch bank: every training patch of a dataset in two tensors, cached on disk.

Building decodes each NIfTI/DICOM case once (MONAI transforms, then patch extraction) and writes
``patches-<key>.safetensors``; later runs with the same files and the same data/intensity settings
load that file instead (no decoding). Training samples minibatches straight from the tensors, so
the bank can live on the GPU when it fits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medgan.atomic import save_atomic
from medgan.config import MedganConfig
from medgan.data.datalist import Case, image_files
from medgan.data.intensity import MAPPING_META_KEY, IntensityMapping
from medgan.data.patches import extract_patches
from medgan.data.provenance import training_cases
from medgan.data.transforms import load_case
from medgan.errors import DataError

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # bump when the extraction logic changes so stale caches are rebuilt


@dataclass
class PatchBank:
    """All training patches of one dataset.

    ``images`` (N, C, *P) float32 in [-1, 1]; ``masks`` (N, 1, *P) uint8; ``case_index`` (N,)
    index into ``case_ids``; ``intensity`` the dataset-level mapping to physical units.
    """

    images: torch.Tensor
    masks: torch.Tensor
    has_lesion: torch.Tensor
    case_index: torch.Tensor
    case_ids: list[str]
    intensity: IntensityMapping
    case_mappings: list[dict[str, Any]]
    spacing_mm: tuple[float, ...]
    fingerprint: str
    skipped: list[str] = field(default_factory=list)
    case_records: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def spatial_dims(self) -> int:
        return self.images.ndim - 2

    @property
    def image_channels(self) -> int:
        return int(self.images.shape[1])

    def pairs(self) -> torch.Tensor:
        """Image and mask as one model-space tensor ``(N, C + 1, *P)``, mask mapped to {-1, 1}."""
        return torch.cat([self.images, self.masks.float() * 2.0 - 1.0], dim=1)

    def metadata(self) -> dict[str, Any]:
        return {
            "case_ids": self.case_ids, "intensity": self.intensity.to_dict(),
            "case_mappings": self.case_mappings, "spacing_mm": list(self.spacing_mm),
            "fingerprint": self.fingerprint, "skipped": self.skipped,
            "case_records": self.case_records,
        }

    def save(self, path: Path) -> None:
        """Write atomically as safetensors with the metadata as a JSON string."""
        tensors = {
            "images": self.images.contiguous(), "masks": self.masks.contiguous(),
            "has_lesion": self.has_lesion.to(torch.uint8), "case_index": self.case_index,
        }
        metadata = {"medgan": json.dumps(self.metadata())}
        save_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @classmethod
    def load(cls, path: Path) -> PatchBank:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["medgan"])
        t = load_file(str(path))
        return cls(
            images=t["images"], masks=t["masks"], has_lesion=t["has_lesion"].bool(),
            case_index=t["case_index"], case_ids=meta["case_ids"],
            intensity=IntensityMapping.from_dict(meta["intensity"]),
            case_mappings=meta["case_mappings"], spacing_mm=tuple(meta["spacing_mm"]),
            fingerprint=meta["fingerprint"], skipped=meta.get("skipped", []),
            case_records=meta.get("case_records", []),
        )


def _case_files(case: Case) -> list[Path]:
    files: list[Path] = []
    for f in [*image_files(case), case["label"]]:
        p = Path(f)
        files += sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    return files


def data_fingerprint(cases: Sequence[Case]) -> str:
    """SHA-256 over every case's id and file contents (independent of where the files live)."""
    return fingerprint_of_records(training_cases(cases))


def fingerprint_of_records(records: Sequence[dict[str, Any]]) -> str:
    """:func:`data_fingerprint` from :func:`~medgan.data.provenance.training_cases` records
    (the file hashes are computed once and serve both)."""
    h = hashlib.sha256()
    for record in sorted(records, key=lambda r: str(r["id"])):
        h.update(str(record["id"]).encode())
        for digest in record["files"].values():
            h.update(digest.encode())
    return h.hexdigest()


def cache_key(cases: Sequence[Case], config: MedganConfig, seed: int) -> str:
    """Cheap key from file paths/sizes/mtimes and every setting that changes the patches."""
    settings = config.to_dict()
    settings["data"].pop("cache_dir", None)
    stats = [
        (str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns)
        for case in cases for f in _case_files(case)
    ]
    payload = {
        "format": CACHE_FORMAT, "modality": config.modality, "dims": config.spatial_dims,
        "data": settings["data"], "intensity": settings["intensity"], "files": stats,
        "ids": [c["case_id"] for c in cases], "seed": seed,
    }
    if any("roi_names" in c for c in cases):  # per-case RTSTRUCT / SEG structure choice
        payload["roi_names"] = [c.get("roi_names") for c in cases]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


class _CaseLoader(Dataset):
    """Loads and patches one case per item; returns errors instead of raising (for skip-bad)."""

    def __init__(self, cases: Sequence[Case], config: MedganConfig, seed: int) -> None:
        self.cases, self.config, self.seed = list(cases), config, seed

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> dict[str, Any]:
        case = self.cases[i]
        try:
            data = load_case(case, self.config)
        except DataError as err:
            return {"index": i, "error": str(err)}
        spatial = tuple(data["image"].shape[1:])
        axes = spatial[:2] if self.config.spatial_dims == 2 else spatial
        if min(axes) < self.config.data.patch_size / 2:  # as in check-data: mostly padding
            return {"index": i, "error": (
                f"{', '.join(image_files(case))}: scan is {' x '.join(map(str, axes))} voxels "
                f"at the target spacing, smaller than half of data.patch_size="
                f"{self.config.data.patch_size}; lower the patch size or the spacing"
            )}
        rng = np.random.default_rng([self.seed, i])
        patches = extract_patches(
            data["image"].as_tensor(), data["label"].as_tensor(), self.config.spatial_dims,
            self.config.data, rng,
        )
        spacing = tuple(float(s) for s in data["image"].pixdim[:3])
        return {"index": i, "patches": patches, "mapping": data[MAPPING_META_KEY],
                "spacing": spacing}


def _stop_quietly(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _worker_init(worker_id: int) -> None:
    """Let a DataLoader worker end quietly on SIGTERM, as on Ctrl-C.

    ``docker stop``, Slurm and ``kill -TERM -PGID`` signal every process of the group. With
    torch's own worker handler the worker dies by the signal, and the main process, which is
    stopping anyway (exit code 143), prints "DataLoader worker ... is killed by signal"
    tracebacks. Workers start with SIGTERM blocked (:func:`_start_workers`) until this runs.
    """
    signal.signal(signal.SIGTERM, _stop_quietly)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _start_workers(loader: DataLoader) -> Iterator[Any]:
    """``iter(loader)``, forking any workers with SIGTERM blocked (pending, not lost)."""
    if loader.num_workers == 0 or not hasattr(signal, "pthread_sigmask"):
        return iter(loader)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def build_patch_bank(
    cases: Sequence[Case], config: MedganConfig, cache_dir: str | Path | None = None,
    skip_bad: bool = False, seed: int = 0, progress: bool = True, write_cache: bool = True,
) -> PatchBank:
    """Preprocess ``cases`` into a :class:`PatchBank`, reusing the on-disk cache when valid.

    Raises :class:`DataError` for the first bad case unless ``skip_bad`` (then it is reported
    and skipped), and when no lesion patch could be extracted at all. ``write_cache=False``
    reads a valid cache but never writes one (the non-zero ranks of a torchrun job).
    """
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"patches-{cache_key(cases, config, seed)}.safetensors"
        if cache_path.is_file():
            try:
                bank = PatchBank.load(cache_path)
                log.info("patch cache hit: %s (%d patches)", cache_path, len(bank))
                return bank
            except (SafetensorError, KeyError, ValueError, OSError):
                log.warning("patch cache %s is unreadable; rebuilding it", cache_path)

    loader = DataLoader(
        _CaseLoader(cases, config, seed), batch_size=None, shuffle=False,
        num_workers=config.train.num_workers,
        worker_init_fn=_worker_init if config.train.num_workers > 0 else None,
    )
    imgs, msks, lesion, index, mappings, spacings, ids, skipped = [], [], [], [], [], [], [], []
    for item in tqdm(_start_workers(loader), total=len(cases), desc="preprocessing", unit="case",
                     disable=not progress, leave=False):
        case = cases[item["index"]]
        if "error" in item:
            if not skip_bad:
                raise DataError(item["error"])
            log.warning("skipping bad case: %s", item["error"])
            skipped.append(item["error"])
            continue
        p = item["patches"]
        if len(p.images) == 0:
            skipped.append(f"{case['label']}: no lesion patch (lesion absent or too small)")
            log.warning("%s", skipped[-1])
            continue
        imgs.append(p.images)
        msks.append(p.masks)
        lesion.append(p.has_lesion)
        index.append(torch.full((len(p.images),), len(ids), dtype=torch.long))
        ids.append(case["case_id"])
        mappings.append(item["mapping"])
        spacings.append(item["spacing"])
    if not imgs:
        first = f"; first problem: {skipped[0]}" if skipped else ""
        raise DataError(
            "no training patches could be extracted: no usable case has a lesion of at least "
            f"data.min_lesion_voxels={config.data.min_lesion_voxels} voxels per "
            f"{'slice' if config.spatial_dims == 2 else 'patch'}{first}"
        )
    kept = [c for c in cases if c["case_id"] in set(ids)]
    records = training_cases(kept)  # one read of every file: hashes for checkpoints and cache
    bank = PatchBank(
        images=torch.cat(imgs), masks=torch.cat(msks), has_lesion=torch.cat(lesion),
        case_index=torch.cat(index), case_ids=ids,
        intensity=IntensityMapping.combine([IntensityMapping.from_dict(m) for m in mappings]),
        case_mappings=mappings,
        spacing_mm=tuple(float(s) for s in np.median(np.asarray(spacings), axis=0)),
        fingerprint=fingerprint_of_records(records), skipped=skipped, case_records=records,
    )
    if cache_path is not None and write_cache:  # made only now: a failed build writes nothing
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        bank.save(cache_path)
    return bank
