"""OpenDP noise of the protected lane: checked statistically (OpenDP has no seed).

Tolerances are many standard errors wide (the sample sizes make a false
failure astronomically unlikely), yet a wrong scale (e.g. the sensitivity
ignored, or ε doubled) moves the statistics far outside them.
"""

from __future__ import annotations

import math
from collections import Counter

from services.aggregate import noise

N = 20_000


def test_discrete_laplace_counts_are_integers_centred_with_the_calibrated_scale():
    """scale = sensitivity / ε = 2: pmf ∝ exp(-|x|/2), variance 2e^(-1/2)/(1-e^(-1/2))²."""
    samples = [v - 10 for v in noise.noisy_counts([10] * N, epsilon=0.5, sensitivity=1)]
    assert all(isinstance(v, int) for v in samples)
    mean = sum(samples) / N
    var = sum(v * v for v in samples) / N
    q = math.exp(-1 / 2)
    expected_var = 2 * q / (1 - q) ** 2
    sd = math.sqrt(expected_var)
    assert abs(mean) < 6 * sd / math.sqrt(N)
    assert abs(var - expected_var) < 0.1 * expected_var


def test_discrete_laplace_matches_its_pmf_chi_square():
    samples = Counter(v - 5 for v in noise.noisy_counts([5] * N, epsilon=1.0, sensitivity=1))
    q = math.exp(-1.0)
    pmf = {x: (1 - q) / (1 + q) * q ** abs(x) for x in range(-4, 5)}
    tail = 1 - sum(pmf.values())
    observed = [samples.get(x, 0) for x in pmf] + [N - sum(samples.get(x, 0) for x in pmf)]
    expected = [N * p for p in pmf.values()] + [N * tail]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    # 9 degrees of freedom: P(chi2 > 45) is about 1e-6.
    assert chi2 < 45


def test_laplace_sums_have_the_calibrated_scale():
    """scale = sensitivity / ε = 1000 / 0.5 = 2000: mean |noise| is the scale."""
    samples = [v - 100.0 for v in noise.noisy_sums([100.0] * N, epsilon=0.5, sensitivity=1000.0)]
    mean_abs = sum(abs(v) for v in samples) / N
    assert abs(sum(samples) / N) < 6 * 2000 * math.sqrt(2) / math.sqrt(N)
    assert abs(mean_abs - 2000) < 6 * 2000 / math.sqrt(N)


def test_threshold_keeps_large_rows_drops_small_ones_and_reports_its_privacy_loss():
    released = noise.thresholded_counts({"big": 500, "small": 2}, 0.5, user_cap=1, threshold=50)
    assert set(released.counts) == {"big"} and abs(released.counts["big"] - 500) < 100
    assert released.epsilon <= 0.5 and 0 < released.delta < 1e-6


def test_a_huge_epsilon_makes_the_noise_vanish():
    assert noise.noisy_counts([3, 7], 1e9, 1) == [3, 7]
    assert [round(v, 2) for v in noise.noisy_sums([12.34], 1e9, 1000.0)] == [12.34]
    assert noise.thresholded_counts({"r": 1}, 1e9, 1, 1).counts == {"r": 1}
