"""The golden fixtures from scripts/make_lerobot_fixtures.py (LeRobot 0.6.1's own outputs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lerobot"
HUB_FOLDERS = {
    "legato-fixtures/smolvlm2-tiny": FIXTURES / "vlm" / "smolvlm2-tiny",
    "google/paligemma-3b-pt-224": FIXTURES / "tokenizers" / "paligemma-tiny",
}


def offline_hf_home(root: Path) -> Path:
    """An HF_HOME whose hub cache holds the fixtures' VLM and tokenizer, as the hub lays it out."""
    for repo_id, folder in HUB_FOLDERS.items():
        repo = root / "hub" / ("models--" + repo_id.replace("/", "--"))
        shutil.copytree(folder, repo / "snapshots" / "fixture")
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("fixture")
    return root


def golden(name: str) -> tuple[list[dict], np.ndarray, dict]:
    """-> observations (one dict per sample: LeRobot feature keys, batched to 1, "task"),
    noise (b, H, 32), the recorded arrays (actions, tokens, token_mask) and meta."""
    z = np.load(FIXTURES / f"{name}_golden.npz")
    meta = json.loads(bytes(z["meta"]).decode())
    obs = []
    for i, task in enumerate(meta["tasks"]):
        o = {k.split("/", 1)[1]: z[k][None] for k in z.files if k.startswith(f"{i}/")}
        o["task"] = [task]
        obs.append(o)
    return obs, z["noise"], {k: z[k] for k in ("actions", "tokens", "token_mask")} | {"meta": meta}
