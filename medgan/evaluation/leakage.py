"""Refuse a generator that has seen the benchmark's test patients (or, by default, any patient
outside the regime it serves).

A checkpoint records the cases it was trained on (``training_cases``: id + SHA-256 per file,
see :mod:`medgan.data.provenance`). A recorded case *overlaps* a benchmark case when the ids
are equal or when any of its file hashes equals the hash of one of that case's image files (a
renamed copy of a test scan is still caught; label files are not compared, since lesion-free
cases can have byte-identical empty labels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medgan.errors import CheckpointError


class GeneratorLeakError(CheckpointError):
    """The generator was trained on patients it must not have seen."""


def _index(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """file SHA-256 -> case id of benchmark case records."""
    return {h: str(r["id"]) for r in records for h in r.get("files", {}).values()}


def generator_case_ids(meta: Mapping[str, Any], benchmark_cases: Sequence[Mapping[str, Any]],
                       source: str) -> set[str]:
    """Benchmark case ids the generator was trained on (by id or by file hash).

    ``benchmark_cases``: records of the benchmark's cases (``{"id", "files"}``, image files
    only: :func:`~medgan.data.provenance.training_cases` with ``label=False``). Raises
    :class:`GeneratorLeakError` when the checkpoint records no training cases.
    """
    recorded = meta.get("training_cases")
    if recorded is None:
        raise GeneratorLeakError(
            f"{source}: the checkpoint does not record which patients it was trained on, so "
            "the benchmark cannot rule out that it saw the test patients; retrain it with this "
            "medgan version, or let the benchmark train one per regime on that regime's "
            "patients only (`train_generator`)")
    by_hash = _index(benchmark_cases)
    known = {str(r["id"]) for r in benchmark_cases}
    seen: set[str] = set()
    for case in recorded:
        if str(case["id"]) in known:
            seen.add(str(case["id"]))
        seen.update(by_hash[h] for h in case.get("files", {}).values() if h in by_hash)
    return seen


def _ids(ids: set[str], shown: int = 10) -> str:
    ordered = sorted(ids)
    more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
    return ", ".join(ordered[:shown]) + more


def check_generator(meta: Mapping[str, Any], benchmark_cases: Sequence[Mapping[str, Any]],
                    test_ids: Sequence[str], regime: str, regime_ids: Sequence[str],
                    source: str, allow_superset: bool = False) -> str | None:
    """Refuse a generator trained on a test patient, or outside ``regime_ids`` unless
    ``allow_superset``; return a warning line for the report when a superset is allowed."""
    seen = generator_case_ids(meta, benchmark_cases, source)
    leaked = seen & set(test_ids)
    if leaked:
        raise GeneratorLeakError(
            f"{source}: the generator was trained on {len(leaked)} test patient(s) of this "
            f"benchmark: {_ids(leaked)}; train it on training patients only")
    outside = seen - set(regime_ids)
    n_extra = len(meta.get("training_cases") or []) - len(seen)
    if not outside and n_extra <= 0:
        return None
    what = f"{len(outside)} patient(s) outside regime {regime!r} ({_ids(outside)})" if outside \
        else ""
    if n_extra > 0:
        what += ("; " if what else "") + f"{n_extra} case(s) that are not in this data"
    if not allow_superset:
        raise GeneratorLeakError(
            f"{source}: the generator was trained on {what}, so its arms would draw on more "
            f"patients than the others in regime {regime!r}; pass `allow_generator_superset` "
            "to accept that, or train one generator per regime")
    return f"generator for regime {regime!r} was trained on {what} (superset allowed)"
