from ..constants import MIN_STEPS  # a two-level relative import, as packs do


def halve(steps):
    return max(MIN_STEPS, steps // 2)
