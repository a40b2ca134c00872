"""The protected lane's noise, drawn by OpenDP (never hand-rolled).

* distinct users per row: ``make_laplace_threshold`` (discrete Laplace noise on
  integer counts, rows whose noisy count is under K are not released at all);
  it releases the *set* of rows too, which is why it is an (ε, δ) mechanism;
* conversions per released row: ``make_laplace`` on integer vectors (discrete
  Laplace);
* clipped value sums per released (row, currency): ``make_laplace`` on float
  vectors (continuous Laplace, OpenDP's floating-point-safe sampler).

OpenDP marks these constructors "contrib" (implemented and proven in its
repository but not yet through its external vetting): ``enable_features``
must opt in once per process, which ``_dp()`` does. OpenDP seeds from the
operating system's CSPRNG and offers no seed hook: tests check the
distributions statistically.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

MECHANISM = (
    "opendp-0.16: laplace_threshold (distinct users), discrete laplace (conversions),"
    " laplace (value sums)"
)
#: Scales are widened by this factor so OpenDP's conservative rounding of the
#: privacy map never reports more than the ε we charged.
SCALE_SLACK = 1 + 1e-9


@cache
def _dp() -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


@dataclass(frozen=True, slots=True)
class Thresholded:
    counts: dict[str, int]
    epsilon: float
    delta: float


def thresholded_counts(
    counts: dict[str, int], epsilon: float, user_cap: int, threshold: int
) -> Thresholded:
    """Noisy distinct-user counts of the rows whose noisy count is at least ``threshold``.

    A user is in at most ``user_cap`` rows, once per row: (l0, l1, l∞) = (cap, cap, 1).
    """
    dp = _dp()
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=int))
    metric = dp.l01inf_distance(dp.absolute_distance(T=int))
    scale = user_cap / epsilon * SCALE_SLACK
    meas = dp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=threshold)
    spent_epsilon, delta = meas.map((user_cap, user_cap, 1))
    if spent_epsilon > epsilon:
        raise ValueError(f"laplace_threshold would spend ε={spent_epsilon} > {epsilon}")
    return Thresholded(dict(meas(counts)), float(spent_epsilon), float(delta))


def noisy_counts(values: list[int], epsilon: float, sensitivity: int) -> list[int]:
    """Discrete Laplace noise on integer counts of L1 sensitivity ``sensitivity``."""
    if not values:
        return []
    dp = _dp()
    meas = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=int)),
        dp.l1_distance(T=int),
        scale=sensitivity / epsilon * SCALE_SLACK,
    )
    if meas.map(sensitivity) > epsilon:
        raise ValueError("discrete laplace would spend more than its ε")
    return [int(v) for v in meas(values)]


def noisy_sums(values: list[float], epsilon: float, sensitivity: float) -> list[float]:
    """Laplace noise on float sums of L1 sensitivity ``sensitivity``."""
    if not values:
        return []
    dp = _dp()
    meas = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.l1_distance(T=float),
        scale=sensitivity / epsilon * SCALE_SLACK,
    )
    if meas.map(sensitivity) > epsilon:
        raise ValueError("laplace would spend more than its ε")
    return [float(v) for v in meas(values)]


class OpenDPNoise:
    """The noise the protected lane uses (a class so tests can pass another)."""

    mechanism = MECHANISM

    def thresholded_counts(
        self, counts: dict[str, int], epsilon: float, user_cap: int, threshold: int
    ) -> Thresholded:
        return thresholded_counts(counts, epsilon, user_cap, threshold)

    def counts(self, values: list[int], epsilon: float, sensitivity: int) -> list[int]:
        return noisy_counts(values, epsilon, sensitivity)

    def sums(self, values: list[float], epsilon: float, sensitivity: float) -> list[float]:
        return noisy_sums(values, epsilon, sensitivity)
