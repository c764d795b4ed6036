"""Does a trained LeRobot policy use its camera? Open-loop chunk error on frames of its own
training data with each frame's own image, another frame's image, and a black image.

    python scripts/camera_check.py --checkpoint runs/x --data data/sim-lerobot-600 [--batch 64]

Prints the RMSE (robot units, rad) of the sampled chunk (d = 0, from noise, the checkpoint's own
method) against the dataset's chunk, over all H steps and over the first 8, and that of holding
the current joint position. A policy that reads its camera does worse with a wrong image; equal
numbers mean its chunks come from the state and the instruction alone (docs/lerobot.md: the
reduced SmolVLA trained on the simulator). Needs the vla extra (torch, transformers).
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="LeRobot policy folder (a legato train run)")
    ap.add_argument("--data", required=True, help="the LeRobotDataset v3 folder it was trained on")
    ap.add_argument("--batch", type=int, default=64, help="frames drawn from the dataset")
    ap.add_argument("--seed", type=int, default=123)
    a = ap.parse_args()

    import torch

    from edge.policy import ChunkRequest
    from legato.adapters.lerobot_runner import LeRobotChunkRunner, load
    from legato.adapters.lerobot_train import LeRobotChunkSampler
    from legato.lerobot_dataset import open_dataset
    from sim.language import tokenize

    torch.set_num_threads(1)
    ck = load(a.checkpoint)
    ds = open_dataset(a.data)
    h = ck.spec.horizon
    cams = tuple(k for k, _ in ck.policy.spec.cameras)
    if len(cams) != 1:
        raise SystemExit(f"{a.checkpoint}: one camera expected, the policy has {len(cams)}")
    obs, act = LeRobotChunkSampler(ds, h, cams, seed=a.seed).sample(a.batch)
    runner = LeRobotChunkRunner(ck, seed=0)
    rng = np.random.default_rng(0)
    eps = rng.standard_normal((a.batch, h, ck.spec.action_dim)).astype(np.float32)
    tokens = np.stack([tokenize(t) for t in obs["task"]])
    state = obs["observation.state"]
    method = "naive" if ck.spec.method == "plain" else ck.spec.method
    req = ChunkRequest(d=0, s=min(8, h - 1), r=0)

    def rmse(image: np.ndarray) -> tuple[float, float]:
        out = runner.chunk(method, SimpleNamespace(image=image, tokens=tokens, state=state), None, req, eps)
        err = (out - act) ** 2
        return float(np.sqrt(err.mean())), float(np.sqrt(err[:, :8].mean()))

    img = obs[cams[0]]
    rows = {
        "own image": rmse(img),
        "another frame's image": rmse(img[rng.permutation(a.batch)]),
        "black image": rmse(np.zeros_like(img)),
    }
    hold = state[:, None, : ck.spec.action_dim]
    print(f"{a.checkpoint}: open-loop chunk RMSE (rad) on {a.batch} training frames, all {h} / first 8 steps")
    for k, (all_, first) in rows.items():
        print(f"  {k:24s} {all_:.5f} / {first:.5f}")
    print(f"  {'hold the joints':24s} {float(np.sqrt(((hold - act) ** 2).mean())):.5f}")


if __name__ == "__main__":
    main()
