"""`legato train --policy smolvla`: a LeRobot-written dataset trains (fresh reduced SmolVLA from
a config, Legato objective), resumes, loads back, and a mismatched dataset is refused first."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers", reason="the vla extra (transformers) is not installed")

from lerobot_fixtures import FIXTURES  # noqa: E402

from legato.cli import main  # noqa: E402

DATASET = FIXTURES / "dataset"  # written by LeRobot 0.6.1's own create / add_frame / save_episode / finalize
CONFIG = FIXTURES.parents[2] / "configs" / "smolvla-reduced.json"
SMALL = ["--batch-obs", "2", "--draws", "2", "--threads", "1"]


def test_lerobot_written_dataset_trains_and_resumes(tmp_path, hf_offline):
    out = tmp_path / "run"
    args = ["train", "--policy", "smolvla", "--init", str(CONFIG), "--data", str(DATASET), "--out", str(out)]
    assert main([*args, "--steps", "2", *SMALL]) == 0
    meta = json.loads((out / "legato.json").read_text())
    assert meta["method"] == "legato" and meta["num_steps"] == 5 and meta["time_convention"] == "t1-noise"
    assert meta["omega_dim"] == 31 and meta["schedule"] == {"shape": "linear", "d_max": 4, "r_max": 8}
    assert json.loads((out / "trainer.json").read_text()) == {"step": 2}
    assert (
        main(
            [
                "train",
                "--policy",
                "smolvla",
                "--data",
                str(DATASET),
                "--out",
                str(out),
                "--resume",
                "--steps",
                "3",
                *SMALL,
            ]
        )
        == 0
    )
    assert json.loads((out / "trainer.json").read_text()) == {"step": 3}
    from legato.adapters.smolvla import SmolVLAPolicy

    policy = SmolVLAPolicy.load(out)  # the run folder is a LeRobot policy folder
    assert policy.spec.chunk == 16 and policy.spec.action_dim == 3
    _harness_chunk_equals_the_adapter(out)


def test_state_relative_actions_are_recorded_and_used_by_the_harness_and_export(tmp_path, hf_offline):
    """--action-norm state-relative: per-index statistics of a - q fitted on the dataset, recorded
    in legato.json; the harness (and so the export's section) unnormalises a = x std + mean + q."""
    import numpy as np

    from edge.normalize import Normalizer
    from legato.adapters import lerobot_runner
    from legato.lerobot_dataset import open_dataset

    out = tmp_path / "run"
    args = ["train", "--policy", "smolvla", "--init", str(CONFIG), "--data", str(DATASET), "--out", str(out)]
    assert main([*args, "--steps", "2", "--action-norm", "state-relative", *SMALL]) == 0
    rel = json.loads((out / "legato.json").read_text())["action_normalization"]
    assert Normalizer.from_dict(rel).relative and np.asarray(rel["action_mean"]).shape == (16, 3)
    ds = open_dataset(DATASET)
    first = ds.columns["action"][:, :3] - ds.columns["observation.state"][:, :3]  # index 0: a_t - q_t
    np.testing.assert_allclose(rel["action_mean"][0], first.mean(0), atol=1e-5)
    section = lerobot_runner.section(lerobot_runner.load(out))
    assert section["normalization"]["kind"] == "state-relative"
    assert section["normalization"]["state_eps"] > 0  # the state keeps LeRobot's MEAN_STD with its eps
    _harness_chunk_equals_the_adapter(out, relative=rel)


def _harness_chunk_equals_the_adapter(run, relative=None):
    """The evaluation's path (edge.denoiser over the adapter's field, t = 0 noise, padded dims)
    gives LeRobot's sample_actions chunk for the same observation and noise."""
    import numpy as np
    import torch

    from edge.policy import ChunkRequest
    from legato.adapters import lerobot_runner
    from sim.env import ReachEnv
    from sim.episodes import sample_episodes
    from sim.language import detokenize
    from sim.task import TaskConfig

    ck = lerobot_runner.load(run)
    runner = lerobot_runner.LeRobotChunkRunner(ck)
    ep = sample_episodes(TaskConfig(), 1000, 2)
    obs = ReachEnv(TaskConfig(), ep.scenes, ep.template).observe()
    eps = np.random.default_rng(0).standard_normal((2, 16, 32)).astype(np.float32)
    chunk = runner.chunk("legato", obs, None, ChunkRequest(d=0, s=8, r=0), eps)  # a first chunk: omega = 0
    lerobot_obs = {
        "observation.images.top": obs.image,
        "observation.state": obs.state,
        "task": [detokenize(t) for t in obs.tokens],
    }
    p = ck.policy
    with torch.no_grad():  # LeRobot's Euler loop from t = 1, the omega channel written as 0
        prefix = p.model.prefix(*p.prefix_inputs(lerobot_obs))
        x, n = torch.from_numpy(eps), p.spec.num_steps
        for k in range(n):
            tau = torch.full((2,), 1.0 - k / n)
            x = (
                x
                - ck.head.velocity(lambda y, t: p.model.velocity(y, t, *prefix), x, tau, torch.zeros(2, 16))
                / n
            )
    if relative is None:
        ref = p.folder.output_norm.unnormalize("action", x[..., :3].numpy())
    else:
        mean, std = np.asarray(relative["action_mean"]), np.asarray(relative["action_std"])
        ref = x[..., :3].numpy() * std + mean + obs.state[:, None, :3]
    assert np.abs(chunk - ref).max() < 1e-4


def test_dataset_whose_features_disagree_with_the_policy_is_refused(tmp_path, hf_offline, capsys):
    out = tmp_path / "run"
    # The fixture SmolVLA reads two cameras (96x128 and 50x40); the dataset has one, 48x64.
    code = main(
        [
            "train",
            "--policy",
            "smolvla",
            "--init",
            str(FIXTURES / "smolvla"),
            "--data",
            str(DATASET),
            "--out",
            str(out),
            "--steps",
            "1",
            *SMALL,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "observation.images.top is (48, 64, 3) (H, W, C), the policy expects (96, 128, 3)" in err
    assert not out.exists()


def test_pi05_fine_tunes_with_legato_on_a_dataset_of_its_features(tmp_path, hf_offline):
    import numpy as np

    from legato.adapters.pi05 import Pi05Policy
    from legato.lerobot_dataset import EpisodeData, write_dataset

    rng = np.random.default_rng(0)
    cams = {"observation.images.base_0_rgb": (40, 48), "observation.images.left_wrist_0_rgb": (32, 32)}
    feats = {
        k: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]}
        for k, (h, w) in cams.items()
    }
    feats |= {
        "observation.state": {"dtype": "float32", "shape": [6], "names": None},
        "action": {"dtype": "float32", "shape": [6], "names": None},
    }
    eps = [
        EpisodeData(
            "pick up the cube",
            {"observation.state": rng.normal(size=(12, 6)), "action": rng.normal(size=(12, 6))},
            {k: rng.integers(0, 256, (12, h, w, 3), dtype=np.uint8) for k, (h, w) in cams.items()},
        )
    ]
    data = tmp_path / "ds"
    data.mkdir()
    write_dataset(data, 10, feats, eps)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--policy",
                "pi05",
                "--init",
                str(FIXTURES / "pi05"),
                "--data",
                str(data),
                "--out",
                str(out),
                "--steps",
                "2",
                *SMALL,
            ]
        )
        == 0
    )
    assert json.loads((out / "legato.json").read_text())["num_steps"] == 10
    assert Pi05Policy.load(out).spec.chunk == 10  # the run folder loads (sizes.json travelled with it)


def test_a_fresh_smolvla_is_drawn_at_unit_gain(tmp_path):
    """A fresh model from a config (--init CONFIG.json): every matrix N(0, 1/fan_in), biases 0,
    norm scales 1 (legato.adapters.lerobot_new.unit_gain_), not transformers' N(0, 0.02^2), under
    which the reduced SmolVLA trained on the simulator never used its camera (docs/lerobot.md)."""
    from safetensors.numpy import load_file

    from legato.adapters.lerobot_new import fresh_policy_folder
    from legato.lerobot_dataset import open_dataset

    folder = fresh_policy_folder("smolvla", CONFIG, open_dataset(DATASET), tmp_path / "fresh", seed=0)
    w = load_file(str(folder / "model.safetensors"))
    matrices = {k: v for k, v in w.items() if v.ndim >= 2 and not k.endswith("lm_head.weight")}
    assert len(matrices) > 50
    for k, v in matrices.items():
        fan_in = v[0].size
        assert abs(v.std() * fan_in**0.5 - 1) < 0.25, (k, v.std(), fan_in)
    assert all(not v.any() for k, v in w.items() if k.endswith(".bias"))
    assert all((v == 1).all() for k, v in w.items() if v.ndim == 1 and "norm" in k and k.endswith(".weight"))


def test_aux_probe_pools_only_the_valid_prefix_tokens():
    import numpy as np
    import torch

    from legato.adapters.lerobot_train import AuxProbe

    probe = AuxProbe(8, mean=np.array([1.0, -1.0]), std=np.array([2.0, 0.5]))
    hidden = torch.randn(3, 5, 8)
    pad = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    target = torch.randn(3, 2)
    garbage = hidden.clone()
    garbage[~pad] = 1e6  # what padded tokens hold never reaches the probe
    assert torch.allclose(probe.loss(hidden, pad, target), probe.loss(garbage, pad, target))
    # The target is compared in the dataset's normalised units.
    pooled = (hidden * pad[..., None]).sum(1) / pad.sum(1, keepdim=True)
    want = torch.mean((probe.proj(probe.norm(pooled)) - (target - probe.mean) / probe.std) ** 2)
    assert torch.allclose(probe.loss(hidden, pad, target), want)


def test_environment_state_in_the_dataset_trains_an_aux_probe_on_the_prefix(tmp_path, hf_offline, capsys):
    """The simulator's dataset carries observation.environment_state: the prefix learns to predict
    it (log's aux_loss), the probe is kept beside the LeRobot folder for --resume, the folder still
    loads, and --aux-weight 0 trains without it."""
    from legato.adapters.smolvla import SmolVLAPolicy

    data = tmp_path / "sim-ds"
    assert (
        main(["sim", "demos", "--episodes", "2", "--seed", "5", "--format", "lerobot", "--out", str(data)])
        == 0
    )
    out = tmp_path / "run"
    args = ["train", "--policy", "smolvla", "--data", str(data), "--out", str(out), *SMALL]
    assert main([*args, "--init", str(CONFIG), "--steps", "2"]) == 0
    assert "aux: the prefix predicts observation.environment_state (4 values)" in capsys.readouterr().out
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(r["aux_loss"] > 0 for r in logged)
    assert (out / "aux.safetensors").is_file()
    assert main([*args, "--resume", "--steps", "3"]) == 0
    assert json.loads((out / "trainer.json").read_text()) == {"step": 3}
    assert SmolVLAPolicy.load(out).spec.chunk == 16
    # Published for inference: the LeRobot folder and legato.json, none of the resume state.
    pub = tmp_path / "published"
    assert main(["checkpoint", "publish", str(out), "--to", str(pub)]) == 0
    names = {f.name for f in pub.iterdir()}
    assert {"config.json", "model.safetensors", "legato.json", "vlm"} <= names
    assert not names & {"optimizer.safetensors", "trainer.json", "aux.safetensors", "log.jsonl"}
    assert (pub / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    _harness_chunk_equals_the_adapter(pub)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["checkpoint", "publish", str(out), "--to", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "mine"
    plain = tmp_path / "no-aux"
    no_aux = [a if a != str(out) else str(plain) for a in args]
    assert main([*no_aux, "--init", str(CONFIG), "--steps", "1", "--aux-weight", "0"]) == 0
    assert not (plain / "aux.safetensors").exists()
    assert "aux_loss" not in (plain / "log.jsonl").read_text()
    # A run trained without the probe cannot resume with one (its optimizer holds no probe state).
    assert main([*no_aux, "--resume", "--steps", "2"]) == 2
    assert "trained without the aux probe" in capsys.readouterr().err
