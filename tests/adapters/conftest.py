from __future__ import annotations

import pytest
from lerobot_fixtures import offline_hf_home


@pytest.fixture(scope="session")
def hf_offline(tmp_path_factory):
    """HF_HOME with the fixtures' hub folders, HF_HUB_OFFLINE=1 (nothing can be downloaded)."""
    mp = pytest.MonkeyPatch()
    home = offline_hf_home(tmp_path_factory.mktemp("hf-home"))
    mp.setenv("HF_HOME", str(home))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    yield home
    mp.undo()
