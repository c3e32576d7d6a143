"""Patient-level splits: no patient in two sets, deterministic per seed, capped regimes."""

from __future__ import annotations

import pytest

from medgan.errors import ConfigError, DataError
from medgan.evaluation.splits import make_split, parse_train_cases, split_test, training_regimes

IDS = [f"pat{i:02d}" for i in range(14)]


@pytest.mark.parametrize("n", [2, 3, 6, 14])
@pytest.mark.parametrize("seed", [0, 7])
def test_no_patient_in_two_sets(n: int, seed: int) -> None:
    split = make_split(IDS[:n], [1, 5, 10, "all"], seed=seed)
    test = set(split.test)
    assert test and not test & set(split.train_pool)
    assert test | set(split.train_pool) == set(IDS[:n])
    for ids in split.regimes.values():
        assert set(ids) <= set(split.train_pool) and not set(ids) & test
        assert len(set(ids)) == len(ids)


def test_deterministic_per_seed_and_order_independent() -> None:
    a = make_split(IDS, [5, "all"], seed=3)
    assert make_split(list(reversed(IDS)), [5, "all"], seed=3) == a
    assert make_split(IDS, [5, "all"], seed=4).test != a.test


def test_regimes_nested_capped_and_deduplicated() -> None:
    pool = IDS[:7]
    regimes = training_regimes(pool, [10, 5, "all", 5], seed=0)
    assert list(regimes) == ["5", "all"]  # 10 capped to 7 = all; duplicates removed
    assert regimes["all"][:5] == regimes["5"]
    assert len(regimes["all"]) == 7


def test_test_fraction_one_third_at_least_one() -> None:
    assert len(split_test(IDS[:6])[0]) == 2
    assert len(split_test(IDS[:2])[0]) == 1


def test_parse_train_cases() -> None:
    assert parse_train_cases("5, 10,ALL") == [5, 10, "all"]
    for bad in ("", "0", "five", "5,-1"):
        with pytest.raises(ConfigError, match="`train_cases`"):
            parse_train_cases(bad)


def test_too_few_cases() -> None:
    with pytest.raises(DataError, match="at least 2 cases"):
        split_test(["only"])
