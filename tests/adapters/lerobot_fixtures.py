"""The golden fixtures from scripts/make_lerobot_fixtures.py (LeRobot 0.6.1's own outputs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from edge.profiles import PROFILE_DIR

# $LEGATO_TEST_LEROBOT_FIXTURES: where a copy of this file runs outside the repository (CI's
# robot-install step runs tests/adapters/test_robot_install.py from a copy)
FIXTURES = Path(
    os.environ.get("LEGATO_TEST_LEROBOT_FIXTURES")
    or Path(__file__).resolve().parents[1] / "fixtures" / "lerobot"
)
PROFILES = PROFILE_DIR  # the installed package's (this file also runs from a copy)
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


def fixture_profile(tmp_path: Path, base: str = "x86-cpu", **settings: str) -> Path:
    """``base`` (x86-cpu) for the fixture policies (H = 10 and N = 10 come from the bundle): s = 5,
    plain (d_max 0), stepwise graphs, and any other ``key = value`` of ``settings``; a calibration
    file named relative to the profile stays found."""
    text = (PROFILES / f"{base}.toml").read_text()
    for key, value in {"execution_horizon": "5", "d_max": "0", "ramp": "0", "graph": '"stepwise"',
                       **settings}.items():  # fmt: skip
        text = re.sub(rf"^{key} = \S+", f"{key} = {value}", text, flags=re.M)
    text = text.replace('\ncalibration = "', f'\ncalibration = "{PROFILES}/')
    path = tmp_path / f"{base}-lerobot-fixture.toml"
    path.write_text(text)
    return path


def golden_request(schema: dict, o: dict, noise: np.ndarray, rec: dict, i: int, prompt: bool = False) -> dict:
    """The request `legato serve` takes for golden observation ``o`` (number ``i``) and its noise,
    built from the metadata's ``schema``: each camera and the state, then the task as openpi's
    ``prompt`` or LeRobot's token ids (padded on the right with id 0 to the bundle's length): the
    ids where the bundle takes them, unless ``prompt`` (the server tokenizes the task)."""
    req = {k: o[k][0] for k in schema if k.startswith("observation.images.") or k == "observation.state"}
    if "prompt" in schema and (prompt or "observation.language.tokens" not in schema):
        req["prompt"] = o["task"][0]
    else:
        ids = np.zeros(schema["observation.language.tokens"]["shape"], np.int64)
        ids[: rec["tokens"].shape[1]] = np.where(rec["token_mask"][i], rec["tokens"][i], 0)
        req["observation.language.tokens"] = ids
    return req | {"legato": {"noise": noise[i]}}


def export_bundles(out: Path) -> None:
    """The fixture SmolVLA and pi0.5 exported to OUT/smolvla and OUT/pi05 (the workstation's venv:
    torch + the vla extra; offline, the VLM config and tokenizers from the fixtures), for the
    robot-install step: `python tests/adapters/lerobot_fixtures.py export-bundles OUT`."""
    from legato.cli import main

    out.mkdir(parents=True, exist_ok=True)
    home = out / "hf-home"
    shutil.rmtree(home, ignore_errors=True)
    os.environ |= {"HF_HOME": str(offline_hf_home(home)), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for name in ("smolvla", "pi05"):
        args = ["export", "--checkpoint", str(FIXTURES / name), "--profile", str(fixture_profile(out))]
        if main([*args, "--parity-samples", "2", "--out", str(out / name)]) != 0:
            sys.exit(f"lerobot_fixtures: exporting the fixture {name} failed")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "export-bundles":
        sys.exit("usage: python tests/adapters/lerobot_fixtures.py export-bundles OUT")
    export_bundles(Path(sys.argv[2]))
