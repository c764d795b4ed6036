"""`legato train --policy smolvla|pi05 --init CHECKPOINT --data DATASET`: fine-tune a LeRobot
policy with the Legato objective (or plain flow matching / training-time RTC's data draws) on a
LeRobotDataset v3, with the existing trainer's parts: its learning-rate schedule, device check,
DDP (torchrun, gloo), atomic checkpoints (edge.outputs), --resume and --force.

The run folder is a LeRobot policy folder (config.json, model.safetensors by LeRobot's key names,
the processors and their statistics: LeRobot loads it) plus legato.json (method, N, d_max,
r_max, schedule shape, omega_dim, velocity form, time convention) and, for resuming,
optimizer.safetensors + trainer.json + log.jsonl. d and r are drawn per example as
legato.objectives draws them; N is the checkpoint's num_steps, fixed and recorded.

Where the dataset has `observation.environment_state` (privileged scene state: the simulator
writes the target's and obstacle's positions) and --aux-weight > 0, a training-only probe
predicts it from the prefix (AuxProbe), as the reference model's auxiliary head does: without
it the policy can lower the flow loss from the joint state alone and let what the camera says
about the scene fade. The probe is saved beside the policy (aux.safetensors, for --resume);
LeRobot, the export and the robot never read it.

--init is a LeRobot policy folder (fine-tuning: its weights and its normalisation statistics)
or a LeRobot policy config JSON (a fresh model: sizes from the file, features and statistics
from the dataset; `configs/smolvla-reduced.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from edge.errors import UsageError
from edge.outputs import atomic_folder, check_target, is_kind
from legato.adapters.legato_flow import TIME_CONVENTION, LegatoHead, to_lerobot
from legato.adapters.lerobot_files import LeRobotCheckpointError
from legato.config import TrainConfig
from legato.errors import TrainingDiverged
from legato.lerobot_dataset import LeRobotDataset, LeRobotDatasetError, open_dataset
from legato.objectives import build_example, weighted_mse

LEGATO_FILE, OPTIMIZER, TRAINER, LOG = "legato.json", "optimizer.safetensors", "trainer.json", "log.jsonl"
AUX = "aux.safetensors"
ENV_STATE = "observation.environment_state"
POLICIES = ("smolvla", "pi05")


# ---------------------------------------------------------------- policy loading
def load_policy(kind: str, path: str | Path):
    if kind == "smolvla":
        from legato.adapters.smolvla import SmolVLAPolicy

        return SmolVLAPolicy.load(path)
    if kind == "pi05":
        from legato.adapters.pi05 import Pi05Policy

        return Pi05Policy.load(path)
    raise UsageError(f"--policy {kind!r}: choose one of {', '.join(POLICIES)}")


def check_fits(ds: LeRobotDataset, policy) -> None:
    """Refuse, in one line, a dataset whose features disagree with the policy's."""
    spec = policy.spec
    for key, (h, w) in spec.cameras:
        if key not in ds.features:
            raise LeRobotDatasetError(
                f"{ds.root}: the policy reads camera {key}, the dataset has "
                f"{', '.join(ds.camera_keys) or 'no camera'}"
            )
        if ds.shape(key) != (h, w, 3):
            raise LeRobotDatasetError(
                f"{ds.root}: {key} is {ds.shape(key)} (H, W, C), the policy expects {(h, w, 3)}"
            )
    for key, dim in (("observation.state", spec.state_dim), ("action", spec.action_dim)):
        if key not in ds.features:
            raise LeRobotDatasetError(f"{ds.root}: no {key} feature (the policy needs {dim} values)")
        if ds.shape(key) != (dim,):
            raise LeRobotDatasetError(
                f"{ds.root}: {key} has shape {ds.shape(key)}, the policy expects ({dim},)"
            )


# ---------------------------------------------------------------- batches
def chunk_rows(ds: LeRobotDataset, horizon: int) -> np.ndarray:
    """(frames, horizon) row indices of the chunk starting at each frame, the episode's last row
    repeated past its end (the arm holds)."""
    ends = np.concatenate([np.full(e.length, e.start + e.length - 1) for e in ds.episodes])
    rows = np.arange(len(ends))
    return np.minimum(rows[:, None] + np.arange(horizon)[None], ends[:, None])


@dataclass
class LeRobotChunkSampler:
    """(frame, chunk of H actions from it) pairs drawn uniformly; chunks padded at episode ends by
    repeating the last action (the arm holds). Frames decoded once, kept as uint8."""

    ds: LeRobotDataset
    horizon: int
    cameras: tuple[str, ...]
    seed: int
    env_state: bool = False  # also return observation.environment_state (the aux probe's target)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.frames = {
            c: np.concatenate([self.ds.frames(c, e) for e in self.ds.episodes]) for c in self.cameras
        }
        self.chunk_rows = chunk_rows(self.ds, self.horizon)

    def sample(self, b: int) -> tuple[dict[str, Any], np.ndarray]:
        rows = self.rng.integers(len(self.chunk_rows), size=b)
        obs: dict[str, Any] = {c: self.frames[c][rows] for c in self.cameras}
        obs["observation.state"] = self.ds.columns["observation.state"][rows].astype(np.float32)
        obs["task"] = [self.ds.task_of(r) for r in rows]
        if self.env_state:
            obs[ENV_STATE] = self.ds.columns[ENV_STATE][rows].astype(np.float32)
        return obs, self.ds.columns["action"][self.chunk_rows[rows]].astype(np.float32)


# ---------------------------------------------------------------- checkpoints
def legato_meta(cfg: TrainConfig, policy, head: LegatoHead) -> dict[str, Any]:
    return {
        "format_version": 1,
        "method": cfg.method,
        "num_steps": policy.spec.num_steps,
        "time_convention": TIME_CONVENTION,
        "omega_dim": head.omega_dim,
        "velocity_form": head.velocity_form,
        "schedule": {"shape": cfg.schedule_shape, "d_max": cfg.d_max, "r_max": cfg.r_max},
        "train": {k: v for k, v in vars(cfg).items()},
    }


def save_run(
    out: Path,
    policy,
    meta: dict[str, Any],
    opt,
    step: int,
    log: str,
    replace: bool,
    aux: AuxProbe | None = None,
) -> None:
    """A LeRobot policy folder + legato.json + resume state (+ the aux probe), swapped in atomically."""
    from safetensors.torch import save_file

    from legato.checkpoint import flatten_optimizer

    src = policy.folder.path
    weights = lerobot_state_dict(policy)
    with atomic_folder(out, "run", replace=replace, also=("checkpoint",)) as tmp:
        # config, processors, statistics, a vlm/ folder
        copy_entries(src, tmp, ("model.safetensors", LEGATO_FILE, OPTIMIZER, TRAINER, LOG, AUX))
        save_file(weights, str(tmp / "model.safetensors"))
        (tmp / LEGATO_FILE).write_text(json.dumps(meta, indent=1))
        save_file(flatten_optimizer(opt), str(tmp / OPTIMIZER))
        (tmp / TRAINER).write_text(json.dumps({"step": step}))
        (tmp / LOG).write_text(log)
        if aux is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in aux.state_dict().items()}, str(tmp / AUX))


def copy_entries(src: Path, dst: Path, skip: tuple[str, ...]) -> None:
    """Copy src's files and folders into dst, except the names in ``skip`` and hidden entries
    (edge.outputs' markers)."""
    for f in src.iterdir():
        if f.name in skip or f.name.startswith("."):
            continue
        if f.is_dir():
            shutil.copytree(f, dst / f.name)
        else:
            shutil.copyfile(f, dst / f.name)


def publish(src: str | Path, dst: str | Path, replace: bool = False) -> Path:
    """`legato checkpoint publish` of a LeRobot run: the policy folder (config, weights,
    processors and their statistics, the VLM's files, legato.json) without the resume state
    (optimizer, trainer step, aux probe, log), verified and swapped in as the reference
    checkpoints are (legato.checkpoint.publish_folder)."""
    from legato.adapters.lerobot_files import policy_type
    from legato.checkpoint import publish_folder

    kind = policy_type(src)
    if kind not in POLICIES:
        raise UsageError(f"{src}: a LeRobot {kind} policy; publish takes {', '.join(POLICIES)}")
    return publish_folder(
        src,
        dst,
        lambda s, tmp: copy_entries(s, tmp, (OPTIMIZER, TRAINER, AUX, LOG)),
        lambda path: load_policy(kind, path),
        replace,
    )


def lerobot_state_dict(policy) -> dict[str, torch.Tensor]:
    """The module's weights under LeRobot's key names, plus the tensors LeRobot stores that this
    path never uses (kept from the source checkpoint, so LeRobot loads the folder strictly)."""
    from safetensors.torch import load_file

    module = policy.model
    kmap = type(module).__module__
    import importlib

    key_map = importlib.import_module(kmap).KEY_MAP
    out = {}
    for k, v in module.state_dict().items():
        for src, dst in key_map:
            if k.startswith(dst):
                out[src + k[len(dst) :]] = v.detach().cpu().contiguous()
                break
    unused = importlib.import_module(kmap).UNUSED
    for k, v in load_file(str(policy.folder.path / "model.safetensors")).items():
        if k.startswith(unused):
            out[k] = v
    return out


# ---------------------------------------------------------------- training
def train(
    policy_kind: str,
    init: str | Path,
    data: str | Path,
    out: str | Path,
    cfg: TrainConfig,
    resume: bool = False,
    force: bool = False,
    device: str = "cpu",
    show_progress: bool = True,
    velocity_form: str = "factored",
    action_norm: str = "lerobot",
) -> Path:
    from legato.train import lr_at, resolve_device

    out = Path(out)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = resolve_device(device)
    if cfg.method == "rtc-train":
        raise UsageError(
            "--method rtc-train needs per-token flow time, which LeRobot's experts do not take; "
            "use legato or plain"
        )
    if not resume:
        check_target(out, "run", replace=force, also=("checkpoint",))
    ds = open_dataset(data)  # every refusal before any model is built
    source = out if resume else Path(init)
    if resume and not is_kind(out, "run"):
        raise UsageError(f"--resume: {out} is not a training run; start without --resume")
    if not resume and Path(init).is_file():
        from legato.adapters.lerobot_new import fresh_policy_folder

        source = fresh_policy_folder(
            policy_kind, Path(init), ds, out.parent / f".{out.name}.init", seed=cfg.seed
        )
    policy = load_policy(policy_kind, source)
    check_fits(ds, policy)
    spec = policy.spec
    omega_dim = spec.max_action_dim - 1
    if omega_dim < spec.action_dim:
        raise LeRobotCheckpointError(
            f"{source}: no padded action dimension left for omega "
            f"(action_dim {spec.action_dim} = max_action_dim {spec.max_action_dim})"
        )
    head = LegatoHead(spec.num_steps, omega_dim, velocity_form)
    relative = relative_actions(source, ds, spec.chunk, action_norm, policy_kind)
    model = policy.model.to(dev).train()
    aux = aux_probe(ds, model, cfg, source if resume else None)
    if aux is not None:
        aux.to(dev)
        if rank == 0:
            print(f"aux: the prefix predicts {ENV_STATE} ({aux.dim} values), weight {cfg.aux_weight:g} "
                  "(training only; --aux-weight 0 turns it off)")  # fmt: skip
    trainable = _trainable(policy)
    opt_params = trainable + ([] if aux is None else list(aux.parameters()))
    opt = torch.optim.AdamW(opt_params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, log_text = 0, ""
    if resume:
        start, log_text = _resume(out, cfg, opt, ds)
    step_module = TrainStep(model, head, _prefix_trains(policy), cfg.draws, aux)
    net = torch.nn.parallel.DistributedDataParallel(step_module) if distributed else step_module
    sampler = LeRobotChunkSampler(
        ds,
        spec.chunk,
        tuple(k for k, _ in spec.cameras),
        seed=cfg.seed * 1000 + rank + start,
        env_state=aux is not None,
    )
    rng = np.random.default_rng([cfg.seed, rank, start])
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + rank + start)
    norm = policy.folder.output_norm
    std = norm.stats.get("action", {}).get("std")
    if relative is not None:
        std = relative.action_std  # (H, a)
    action_std = (
        None
        if std is None
        else np.concatenate(
            [np.broadcast_to(std, (spec.chunk, spec.action_dim)),
             np.full((spec.chunk, spec.max_action_dim - spec.action_dim), np.inf)], -1)
    )  # fmt: skip
    meta = legato_meta(cfg, policy, head) | {"data": {"path": str(data), **ds.describe()}}
    if relative is not None:
        meta["action_normalization"] = relative.to_dict()
    log_lines = [log_text] if log_text else []
    bar = tqdm(
        range(start, cfg.steps),
        initial=start,
        total=cfg.steps,
        desc=f"train {policy_kind} {cfg.method}",
        disable=not show_progress or rank != 0,
        dynamic_ncols=True,
    )
    t0, ema = time.time(), None
    a = spec.action_dim
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        obs, actions = sampler.sample(cfg.batch_obs)
        act = torch.from_numpy(
            norm.normalize("action", actions)
            if relative is None
            else relative.action(actions, obs["observation.state"])
        )  # (b, H, a)
        act = torch.nn.functional.pad(act, (0, spec.max_action_dim - a)).repeat_interleave(cfg.draws, 0)
        eps = torch.randn(act.shape, generator=gen)
        ex = to_lerobot(build_example(act, eps, cfg, spec.num_steps, rng, action_std)).to(dev)
        env = None if aux is None else torch.from_numpy(obs[ENV_STATE]).to(dev)
        v, aux_loss = net(policy.prefix_inputs(obs), ex.y, ex.t[:, 0], ex.omega, env)  # per-example flow time
        ex_a = type(ex)(ex.y, ex.t, ex.omega, ex.target[..., :a], ex.weight)
        flow_loss = weighted_mse(v[..., :a], ex_a)
        loss = flow_loss + cfg.aux_weight * aux_loss
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(opt_params, cfg.grad_clip)
        opt.step()
        ema = flow_loss.item() if ema is None else 0.98 * ema + 0.02 * flow_loss.item()
        if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            bar.set_postfix(loss=f"{ema:.4f}", lr=f"{lr_at(step, cfg):.1e}")
            log_lines.append(
                json.dumps(
                    {
                        "step": step,
                        "loss": flow_loss.item(),
                        "loss_ema": ema,
                        **({} if aux is None else {"aux_loss": aux_loss.item()}),
                        "lr": lr_at(step, cfg),
                        "elapsed_s": time.time() - t0,
                    }
                )
                + "\n"
            )
        if rank == 0 and ((step + 1) % cfg.ckpt_every == 0 or step == cfg.steps - 1):
            stats = {"step": step + 1, "loss_ema": ema, "wall_s": time.time() - t0}
            save_run(
                out,
                policy,
                meta | {"training": stats},
                opt,
                step + 1,
                "".join(log_lines),
                replace=True,
                aux=aux,
            )
            policy.folder = _refolder(policy.folder, out)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    if not resume and Path(init).is_file():
        shutil.rmtree(out.parent / f".{out.name}.init", ignore_errors=True)
    return out


def relative_actions(
    source: Path, ds: LeRobotDataset, horizon: int, action_norm: str, policy_kind: str
) -> Any:
    """The state-relative action normaliser (edge.normalize, per chunk index, as the reference
    model's) of a run: the one its legato.json records (a resumed run, a fine-tune of such a run),
    else fitted on every chunk of the dataset with --action-norm state-relative; None: LeRobot's
    own MEAN_STD statistics."""
    from edge.normalize import Normalizer

    meta_file = Path(source) / LEGATO_FILE
    recorded = json.loads(meta_file.read_text()).get("action_normalization") if meta_file.is_file() else None
    if recorded is not None:
        return Normalizer.from_dict(recorded)
    if action_norm == "lerobot":
        return None
    if policy_kind != "smolvla":
        raise UsageError(f"--action-norm state-relative is for --policy smolvla, not {policy_kind}")
    states = ds.columns["observation.state"].astype(np.float32)
    return Normalizer.fit(states, ds.columns["action"][chunk_rows(ds, horizon)].astype(np.float32))


class AuxProbe(torch.nn.Module):
    """Training only: the prefix's last hidden states (b, p, width), mean-pooled over its valid
    tokens -> the environment state (b, dim), normalised by the dataset's mean and std; its loss
    is the mean squared error in those units. Its gradient makes the prefix (hence the K/V cache the
    expert reads) carry where things are."""

    def __init__(self, width: int, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.dim = len(mean)
        self.norm = torch.nn.LayerNorm(width)
        self.proj = torch.nn.Linear(width, self.dim)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.maximum(std, 1e-6), dtype=torch.float32))

    def loss(self, hidden: torch.Tensor, pad: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = pad.to(hidden.dtype)[..., None]
        pooled = (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)
        return torch.mean((self.proj(self.norm(pooled)) - (target - self.mean) / self.std) ** 2)


def aux_probe(
    ds: LeRobotDataset, model: torch.nn.Module, cfg: TrainConfig, resume_from: Path | None
) -> AuxProbe | None:
    """The run's probe: None without an environment state in the dataset or with --aux-weight 0;
    restored from the run folder on --resume."""
    if cfg.aux_weight <= 0 or ENV_STATE not in ds.features:
        return None
    if not hasattr(model, "prefix_hidden"):
        raise UsageError(
            f"--aux-weight: {type(model).__name__} exposes no prefix hidden states; pass --aux-weight 0"
        )
    col = ds.columns[ENV_STATE].astype(np.float64)
    probe = AuxProbe(int(model.prefix_width), col.mean(0), col.std(0))
    if resume_from is not None:
        from safetensors.torch import load_file

        path = resume_from / AUX
        if not path.is_file():
            raise UsageError(
                f"--resume: {resume_from} was trained without the aux probe; pass --aux-weight 0"
            )
        probe.load_state_dict(load_file(str(path)))
    return probe


class TrainStep(torch.nn.Module):
    """One training forward as a module (so DDP sees it): the prefix of b observations once,
    shared by its `draws` flow inputs; the Legato head on the expert's velocity; the aux probe's
    loss on the prefix (0 without one)."""

    def __init__(
        self,
        model: torch.nn.Module,
        head: LegatoHead,
        prefix_trains: bool,
        draws: int,
        aux: AuxProbe | None = None,
    ) -> None:
        super().__init__()
        self.model, self.head, self.prefix_trains, self.draws, self.aux = (
            model,
            head,
            prefix_trains,
            draws,
            aux,
        )

    def forward(
        self,
        inputs: tuple,
        y: torch.Tensor,
        t: torch.Tensor,
        omega: torch.Tensor,
        env: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(self.prefix_trains and torch.is_grad_enabled()):
            if self.aux is None:
                keys, values, pad = self.model.prefix(*inputs)
                aux_loss = y.new_zeros(())
            else:
                keys, values, pad, hidden = self.model.prefix_hidden(*inputs)
                aux_loss = self.aux.loss(hidden, pad, env)
        keys, values, pad = (x.repeat_interleave(self.draws, 0) for x in (keys, values, pad))
        v = self.head.velocity(lambda x, tt: self.model.velocity(x, tt, keys, values, pad), y, t, omega)
        return v, aux_loss


def _refolder(folder, out: Path):
    """After the first save the run folder is the source of the retained tensors and files."""
    from dataclasses import replace

    return replace(folder, path=out)


def _prefix_trains(policy) -> bool:
    return not bool(policy.folder.config.get("train_expert_only", False))


def _trainable(policy) -> list[torch.nn.Parameter]:
    """LeRobot's freezing flags: train_expert_only freezes the VLM, freeze_vision_encoder the
    vision tower; everything else trains."""
    c, m = policy.folder.config, policy.model
    frozen: list[torch.nn.Module] = []
    if c.get("train_expert_only"):
        frozen += [getattr(m, "vlm", None), getattr(m, "vision_tower", None), getattr(m, "projector", None)]
    if c.get("freeze_vision_encoder"):
        frozen += [getattr(getattr(m, "vlm", None), "vision_model", None), getattr(m, "vision_tower", None)]
    if not c.get("train_state_proj", True) and hasattr(m, "state_proj"):
        frozen.append(m.state_proj)
    skip = {id(p) for f in frozen if f is not None for p in f.parameters()}
    for p in m.parameters():
        p.requires_grad_(id(p) not in skip)
    return [p for p in m.parameters() if p.requires_grad]


def _resume(out: Path, cfg: TrainConfig, opt, ds) -> tuple[int, str]:
    from legato.checkpoint import restore_optimizer

    meta = json.loads((out / LEGATO_FILE).read_text())
    if meta.get("method") != cfg.method:
        raise UsageError(
            f"--resume: {out} is a {meta.get('method')} run; it cannot continue as --method {cfg.method}"
        )
    start = int(json.loads((out / TRAINER).read_text())["step"])
    if start >= cfg.steps:
        raise UsageError(f"--resume: {out} is already at step {start}; pass --steps larger than {start}")
    restore_optimizer(opt, out / OPTIMIZER)
    return start, (out / LOG).read_text() if (out / LOG).exists() else ""


def run(a: argparse.Namespace) -> int:
    from legato.train_args import config_from_args

    if not a.init and not a.resume:
        raise UsageError(
            f"--policy {a.policy} needs --init (a LeRobot policy folder, or a policy config JSON)"
        )
    cfg = config_from_args(a)
    out = train(
        a.policy,
        a.init or a.out,
        a.data,
        a.out,
        cfg,
        resume=a.resume,
        force=a.force,
        device=a.device,
        velocity_form=a.velocity_form,
        action_norm=getattr(a, "action_norm", "lerobot"),
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {out}")
    return 0
