"""A full-size LeRobot SmolVLA policy folder with random weights (the published sizes: SmolVLM2-500M's
config, 16 VLM layers, expert at 0.75x, chunk 50, N = 10, 512 px), features and statistics from a
LeRobot dataset, for the full-size export / verify / profile check of issue 18. Nothing is
downloaded: the VLM config is legato.adapters.published's, the tokenizer and processor files the
reduced VLM's (configs/smolvlm2-reduced: its ids are a subset of the full vocabulary).

    .venv/bin/legato sim demos --episodes 4 --format lerobot --out /tmp/demos
    .venv/bin/python scripts/make_full_smolvla.py --data /tmp/demos --out /tmp/smolvla-full   # ~1.7 GB
    .venv/bin/legato export --checkpoint /tmp/smolvla-full --out /tmp/smolvla-full-bundle --episodes 0

Holds about 4 GB while it writes (the fp32 model and its state dict).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a LeRobot dataset (its features and statistics)")
    ap.add_argument("--out", required=True, help="the policy folder to write (replaced)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from legato.adapters.lerobot_new import fresh_policy_folder
    from legato.adapters.published import SMOLVLA_BASE, smolvlm_config
    from legato.lerobot_dataset import open_dataset

    ds = open_dataset(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        vlm = Path(tmp) / "smolvlm2-500m"
        vlm.mkdir()
        for f in ("processor_config.json", "tokenizer.json", "tokenizer_config.json"):
            (vlm / f).write_bytes((ROOT / "configs" / "smolvlm2-reduced" / f).read_bytes())
        smolvlm_config().save_pretrained(str(vlm))
        cfg = json.loads((ROOT / "configs" / "smolvla-reduced.json").read_text())
        cfg |= {**SMOLVLA_BASE, "vlm_model_name": vlm.name, "n_action_steps": SMOLVLA_BASE["chunk_size"]}
        (Path(tmp) / "config.json").write_text(json.dumps(cfg, indent=4))
        folder = fresh_policy_folder("smolvla", Path(tmp) / "config.json", ds, Path(args.out), args.seed)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"wrote {folder}: full-size SmolVLA, random weights, {size / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
