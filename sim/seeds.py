"""Episode-set seeds, in one place.

An episode is a pure function of (set seed, index) (sim.episodes), so sets with different seeds
share no episode. Training sets use seeds below HELD_OUT_SEED (0 by default); evaluation uses
HELD_OUT_SEED and above.
"""

from __future__ import annotations

TRAIN_SEED = 0  # the default demonstration set
HELD_OUT_SEED = 1000  # the first held-out set: every evaluation's default


def held_out_seed(train_seed: int | None) -> int:
    """A held-out seed whose episodes no training set with `train_seed` contains."""
    return HELD_OUT_SEED if train_seed != HELD_OUT_SEED else HELD_OUT_SEED + 1
