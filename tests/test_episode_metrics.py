"""legato.episode_metrics: a cell's means from its per-episode table."""

import math

import numpy as np
import pytest

from legato.episode_metrics import EPISODE_KEYS, aggregate


def _table(route):
    t = np.zeros((len(route), len(EPISODE_KEYS)))
    t[:, EPISODE_KEYS.index("success")] = 1.0
    t[:, EPISODE_KEYS.index("steps")] = 100.0
    t[:, EPISODE_KEYS.index("route")] = route
    return t


def test_left_route_is_the_share_of_routed_episodes_that_went_left():
    out = aggregate(_table([1.0, 1.0, -1.0, np.nan]), dt=0.05)
    assert out["left_route"] == pytest.approx(2 / 3)  # the unrouted episode counts for neither
    assert "route" not in out and out["success_rate"] == 1.0


def test_a_cell_where_no_episode_ever_chose_has_no_left_share():
    assert math.isnan(aggregate(_table([np.nan, np.nan]), dt=0.05)["left_route"])
