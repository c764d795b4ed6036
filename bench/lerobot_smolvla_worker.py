"""LeRobot's own SmolVLA in torch eager, timed inside LeRobot's throwaway environment, as the
baseline column of bench/bench_smolvla.py (`--lerobot-policy DIR`). Never imported by the
project: bench_smolvla.py starts it with that environment's Python
($LEROBOT_ENV/bin/python, made by `scripts/make_lerobot_fixtures.py setup`).

    $LEROBOT_ENV/bin/python bench/lerobot_smolvla_worker.py POLICY_DIR INPUTS.npz [THREADS]

POLICY_DIR is a LeRobot SmolVLA folder (scripts/make_full_smolvla.py writes one at the published
sizes; its VLM config in POLICY_DIR/vlm). INPUTS.npz holds the bench's observation and noise:
frame uint8 (1, H, W, 3), tokens int64 (1, l), token_mask int64 (1, l), state float32
(1, max_state_dim) normalised and padded, x float32 (1, chunk, max_action_dim), t float32 (1,).
THREADS torch threads (default 1). Commands on stdin, one per line; each answer is one stdout line
starting "@@ " (LeRobot prints to stdout too):
    prefix        -> seconds of LeRobot's prefix: prepare_images (resize-with-pad, [-1, 1]),
                     embed_prefix and the VLM forward that fills the K/V cache, as sample_actions
    step          -> seconds of one denoise_step on that cache (LeRobot crops it back after)
    velocity OUT  -> writes that step's velocity (1, chunk, max_action_dim) to OUT.npy
    rss           -> this process's peak resident memory in GiB
    quit
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def main() -> int:
    import make_lerobot_fixtures  # the throwaway environment's own patches

    make_lerobot_fixtures.guard_torchvision()
    import numpy as np
    import torch
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy, make_att_2d_masks

    folder, inputs = Path(sys.argv[1]), np.load(sys.argv[2])
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    cfg = PreTrainedConfig.from_pretrained(folder)
    cfg.vlm_model_name = str(folder / "vlm")  # the folder's own VLM config, never the hub
    policy = SmolVLAPolicy.from_pretrained(folder, config=cfg).eval()
    m = policy.model
    camera = next(iter(cfg.image_features))
    frame = torch.from_numpy(inputs["frame"]).permute(0, 3, 1, 2).float() / 255  # as a camera step gives it
    tokens = torch.from_numpy(inputs["tokens"])
    token_mask = torch.from_numpy(inputs["token_mask"]).bool()
    state, x = torch.from_numpy(inputs["state"]), torch.from_numpy(inputs["x"])
    t = torch.from_numpy(inputs["t"])
    cache: dict = {}

    def prefix() -> None:
        images, img_masks = policy.prepare_images({camera: frame})
        embs, pad, att = m.embed_prefix(images, img_masks, tokens, token_mask, state=state)
        _, kv = m.vlm_with_expert.forward(
            attention_mask=make_att_2d_masks(pad, att),
            position_ids=torch.cumsum(pad, dim=1) - 1,
            past_key_values=None,
            inputs_embeds=[embs, None],
            use_cache=cfg.use_cache,
        )
        cache.update(pad=pad, kv=kv)

    def step() -> torch.Tensor:
        return m.denoise_step(cache["pad"], cache["kv"], x, t)

    def answer(value: object) -> None:
        print("@@ " + json.dumps(value), flush=True)

    answer({"params": sum(p.numel() for p in policy.parameters())})
    with torch.no_grad():
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "quit":
                break
            if cmd in ("prefix", "step"):
                fn = prefix if cmd == "prefix" else step
                t0 = time.perf_counter()
                fn()
                answer(time.perf_counter() - t0)
            elif cmd == "rss":
                answer(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
            elif cmd == "velocity":
                np.save(arg, step().numpy())
                answer(arg)
            else:
                answer({"error": f"unknown command {cmd!r}"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
