"""Rank cut and gap on constructed spectra."""

import math

import numpy as np
import pytest

from conflow.engine.rank import cut_spectrum, gap_ratio, numerical_rank


def test_cut_and_gap_on_a_constructed_spectrum():
    s = np.array([3.0, 1.0, 2e-3, 5e-14, 1e-15])
    cut = cut_spectrum(s, rtol=1e-9)
    assert cut.rank == 3
    assert cut.sigma_kept == 2e-3 and cut.sigma_dropped == 5e-14
    assert cut.gap == pytest.approx(2e-3 / 5e-14)


def test_full_and_empty_spectra():
    assert cut_spectrum(np.array([1.0, 0.5]), 1e-9).gap == math.inf
    empty = cut_spectrum(np.array([1e-16, 0.0]), 1e-9)
    assert empty.rank == 0 and empty.sigma_kept is None
    assert gap_ratio(1.0, 0.0) == math.inf


def test_numerical_rank_of_a_matrix_with_known_rank():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((12, 4)) @ rng.standard_normal((4, 9))
    cut = numerical_rank(m)
    assert cut.rank == 4
    assert cut.gap > 1e8


def test_rows_are_judged_against_their_scale_not_their_norm():
    # A rounding-level row must stay at rounding level: normalising it by its own norm would
    # turn it into a unit vector and add a rank.
    rows = np.array([[1.0, 0.0, 0.0], [0.0, 1e-17, 3e-17]])
    assert numerical_rank(rows, scales=np.array([1.0, 1.0])).rank == 1
    assert numerical_rank(rows).rank == 1
