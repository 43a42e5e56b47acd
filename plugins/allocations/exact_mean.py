"""The one rule every allocation obeys: the size-weighted mean of the ratios is the target, exactly."""

from collections.abc import Sequence

from autoprune.plugin import ConfigError

MAX_RATIO = 0.99  # a unit keeps at least 1 % of its weights


def renormalise(
    target: float, offsets: Sequence[float], sizes: Sequence[int], max_ratio: float = MAX_RATIO
) -> list[float]:
    """Ratios target + offset + c, clipped to [0, max_ratio], with size-weighted mean exactly `target`.

    The common shift c is found by bisection. When the offsets already have a weighted mean of
    zero and nothing is clipped, c = 0 and the ratios are target + offset unchanged.
    """
    if not 0.0 <= target <= max_ratio:
        raise ConfigError(f"target sparsity {target} is outside [0, {max_ratio}]")
    total = float(sum(sizes))

    def ratios(shift: float) -> list[float]:
        return [min(max(target + offset + shift, 0.0), max_ratio) for offset in offsets]

    def mean(shift: float) -> float:
        return sum(r * n for r, n in zip(ratios(shift), sizes)) / total

    low, high = -1.0 - max(offsets), 1.0 - min(offsets)  # mean(low) = 0, mean(high) = max_ratio
    for _ in range(200):
        middle = (low + high) / 2
        if mean(middle) < target:
            low = middle
        else:
            high = middle
    return ratios((low + high) / 2)
