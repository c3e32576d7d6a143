"""Patient-level splits for the downstream segmentation benchmark.

Every split is by case (one case = one patient's scan), never by slice or patch, so no patient
contributes to both training and testing. The held-out test cases are fixed for a benchmark;
each training regime takes the first ``k`` cases of one seeded permutation of the remaining
cases, so smaller regimes are subsets of larger ones and every arm and seed sees the same cases.
A regime of ``k`` patients holds out its last ``max(1, round(k * validation_fraction))`` of them
(none when ``k`` is 1 or the fraction is 0) as validation patients: they choose the stopping
iteration and the ratio, and are never trained on (neither by the UNet nor by a per-regime
generator).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medgan.errors import ConfigError, DataError

ALL = "all"


@dataclass(frozen=True)
class Split:
    """Held-out ``test`` case ids, the training case ids of each regime (name -> ids) and its
    validation case ids (name -> ids, disjoint from its training ids)."""

    test: tuple[str, ...]
    train_pool: tuple[str, ...]
    regimes: dict[str, tuple[str, ...]]
    validation: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"test": list(self.test), "train_pool": list(self.train_pool),
                "regimes": {k: list(v) for k, v in self.regimes.items()},
                "validation": {k: list(v) for k, v in self.validation.items()}}


def parse_train_cases(text: str) -> list[int | str]:
    """``"5,10,all"`` -> ``[5, 10, "all"]``; raise :class:`ConfigError` for anything else."""
    items: list[int | str] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if item == ALL:
            items.append(ALL)
        elif item.isdigit() and int(item) > 0:
            items.append(int(item))
        else:
            raise ConfigError(
                f"`train_cases` must be a comma-separated list of positive integers and/or "
                f"'all', not {text!r}"
            )
    if not items:
        raise ConfigError(f"`train_cases` must name at least one regime, not {text!r}")
    return items


def _permutation(ids: Sequence[str], seed: int, stream: int) -> list[str]:
    """``ids`` (sorted first, so the input order does not matter) in a seeded random order."""
    ordered = sorted(ids)
    rng = np.random.default_rng([seed, stream])
    return [ordered[i] for i in rng.permutation(len(ordered))]


def split_test(case_ids: Sequence[str], test_fraction: float = 1 / 3, seed: int = 0
               ) -> tuple[list[str], list[str]]:
    """``(test ids, training pool ids)``: ``max(1, round(n * test_fraction))`` cases held out.

    Deterministic for a given ``seed`` and set of ids. Raises :class:`DataError` with fewer than
    two cases and :class:`ConfigError` for a fraction outside (0, 1).
    """
    if len(set(case_ids)) != len(case_ids):
        raise DataError("case ids must be unique to split by patient")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test fraction must be a number in (0, 1), not {test_fraction}")
    if len(case_ids) < 2:
        raise DataError(
            f"the segmentation benchmark needs at least 2 cases (1 training, 1 test), "
            f"not {len(case_ids)}"
        )
    order = _permutation(case_ids, seed, stream=0)
    n_test = min(max(1, round(len(order) * test_fraction)), len(order) - 1)
    return order[:n_test], order[n_test:]


def training_regimes(train_pool: Sequence[str], sizes: Sequence[int | str], seed: int = 0
                     ) -> dict[str, tuple[str, ...]]:
    """Regime name -> training case ids: the first ``k`` of a seeded permutation of the pool.

    ``k`` is capped at the pool size; regimes that end up with the same ``k`` are kept once.
    The regime holding the whole pool is named ``"all"``, the others by their size (``"5"``).
    Regimes are ordered by size.
    """
    order = _permutation(train_pool, seed, stream=1)
    effective = sorted({len(order) if s == ALL else min(int(s), len(order)) for s in sizes})
    return {(ALL if k == len(order) else str(k)): tuple(order[:k]) for k in effective if k > 0}


def n_validation(k: int, fraction: float) -> int:
    """Validation patients held out of a regime of ``k``: ``max(1, round(k * fraction))``,
    0 when ``fraction`` is 0 or ``k`` < 2 (at least one patient stays for training)."""
    if fraction <= 0 or k < 2:
        return 0
    return min(k - 1, max(1, round(k * fraction)))


def make_split(case_ids: Sequence[str], sizes: Sequence[int | str], test_fraction: float = 1 / 3,
               seed: int = 0, validation_fraction: float = 0.0) -> Split:
    """The complete patient-level split of a benchmark (see :func:`split_test`); each regime
    keeps its last :func:`n_validation` patients for validation."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"validation fraction must be a number in [0, 1), not "
                          f"{validation_fraction}")
    test, pool = split_test(case_ids, test_fraction, seed)
    regimes, validation = {}, {}
    for name, ids in training_regimes(pool, sizes, seed).items():
        n_val = n_validation(len(ids), validation_fraction)
        regimes[name], validation[name] = ids[:len(ids) - n_val], ids[len(ids) - n_val:]
    return Split(tuple(test), tuple(pool), regimes, validation)
