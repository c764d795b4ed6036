"""Training loop for all three methods: same architecture, data, optimiser and step budget.

Single process by default; under `torchrun --nproc_per_node K -m legato.train ...` it runs
DistributedDataParallel with the gloo backend (CPU), each rank drawing its own batches and
rank 0 writing checkpoints and logs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from edge.errors import UsageError
from edge.outputs import check_target, sha256_file
from legato import checkpoint
from legato import demos as demo_io
from legato.config import PolicyConfig, TrainConfig
from legato.data import ChunkSampler
from legato.errors import CheckpointError, TrainingDiverged
from legato.model import Policy
from legato.objectives import build_example, weighted_mse
from legato.train_args import add_arguments, config_from_args, horizon_from_args
from sim.tasks import policy_io


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.lr / 10 at cfg.steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def resolve_device(name: str) -> torch.device:
    """A torch device this build can use, or ValueError with the reason in one line."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown torch device {name!r} (try cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this torch build sees no CUDA GPU; train with --device cpu")
    return dev


def policy_config_for(demos: demo_io.Demos, base: PolicyConfig | None = None) -> PolicyConfig:
    """The policy config implied by a dataset's task (action/state dims, image size, vocabulary)."""
    base = base or PolicyConfig()
    return PolicyConfig(**{**base.__dict__, **policy_io(demos.task)})


def train(
    data: str | Path,
    out: str | Path,
    cfg: TrainConfig,
    policy_cfg: PolicyConfig | None = None,
    resume: bool = False,
    show_progress: bool = True,
    device: str = "cpu",
    force: bool = False,
) -> Path:
    """Train one method and return the checkpoint folder. resume=True continues from `out`;
    force=True replaces a run or checkpoint already at `out` (anything else there is refused).
    device: torch device of the model ("cuda" on a GPU machine); batches are built on the CPU."""
    out = Path(out)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = resolve_device(device)  # before any work, so a wrong device costs nothing
    if dev.type != "cpu" and distributed:
        raise UsageError("distributed training runs on the CPU (gloo); drop --device")
    if not resume:
        check_target(out, "run", replace=force, also=("checkpoint",))  # never train over foreign files
    demos = demo_io.load(data)
    data_sha = sha256_file(data)  # recorded in every checkpoint; --resume checks it
    pcfg = policy_config_for(demos, policy_cfg)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = Policy(pcfg)
    model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, log_text = 0, ""
    if resume:
        start, log_text = _resume_into(out, cfg, data_sha, model, opt)
    averaged = weight_average(model, cfg.ema_decay, out if resume else None, start)
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    sampler = ChunkSampler(demos, None, pcfg.horizon, seed=cfg.seed * 1000 + rank + start)
    norm = sampler.norm
    rng = np.random.default_rng([cfg.seed, rank, start])
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + rank + start)
    meta = {
        "data": {"path": str(data), "sha256": data_sha, **demos.describe()},
        "params": model.num_params(),
    }
    log_lines: list[str] = [log_text] if resume and log_text else []
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train {cfg.method}",
               disable=not show_progress or rank != 0, dynamic_ncols=True)  # fmt: skip
    t0, ema, seen = time.time(), None, 0
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        b = sampler.sample(cfg.batch_obs)
        actions = torch.from_numpy(b.actions).repeat_interleave(cfg.draws, 0)  # (n, h, a)
        eps = torch.randn(actions.shape, generator=gen)
        own = None
        if cfg.method == "legato" and cfg.reference_target == "recover" and cfg.p_own_reference > 0:
            own = own_references(model, sampler, b.rows, b.state, cfg.own_reference_s, gen, dev)
            own = own.repeat_interleave(cfg.draws, 0)
        ex = build_example(actions, eps, cfg, pcfg.num_steps, rng, norm.action_std, reference=own)
        ex = ex.to(dev)
        obs = [torch.from_numpy(x).to(dev) for x in (b.image, b.tokens, b.state)]
        v, aux = net(*obs, ex.y, ex.t, ex.omega)
        flow_loss = weighted_mse(v, ex)
        aux_loss = torch.mean((aux - torch.from_numpy(b.aux).to(dev)) ** 2)
        loss = flow_loss + cfg.aux_weight * aux_loss
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if averaged is not None:
            averaged.update_parameters(model)
        seen += actions.shape[0]
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            rate = seen / max(time.time() - t0, 1e-9)
            bar.set_postfix(loss=f"{ema:.4f}", chunks_per_s=f"{rate:.0f}", lr=f"{lr_at(step, cfg):.1e}")
            rec = {"step": step, "loss": loss.item(), "flow_loss": flow_loss.item()}
            rec.update(aux_loss=aux_loss.item(), loss_ema=ema, lr=lr_at(step, cfg))
            log_lines.append(json.dumps({**rec, "elapsed_s": time.time() - t0}) + "\n")
        last = step == cfg.steps - 1
        if rank == 0 and ((step + 1) % cfg.ckpt_every == 0 or last):
            stats = {"step": step + 1, "loss_ema": ema, "wall_s": time.time() - t0, "world_size": _world()}
            saved = model if averaged is None else averaged.module
            checkpoint.save(out, saved, cfg, norm, demos.task, {**meta, "training": stats}, opt,
                            {"step": step + 1}, log="".join(log_lines), replace=True,
                            train_weights=None if averaged is None else model)  # fmt: skip
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return out


def weight_average(model: Policy, decay: float, run: Path | None, start: int) -> AveragedModel | None:
    """The exponential moving average of `model`'s weights (torch's AveragedModel: after each
    step avg = decay * avg + (1 - decay) * weights; the first update copies), or None for decay 0.
    Resuming (`run` given), the average continues from the run's saved one, and `model`, which
    _resume_into loaded from that same average, gets the run's un-averaged weights back."""
    if decay == 0:
        return None
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if run is not None:  # the checkpoint's own checks: names, shapes, finite values
        checkpoint.load_weights(run, checkpoint.TRAIN_WEIGHTS, model)
        averaged.n_averaged.fill_(start)  # nonzero: the next update averages instead of copying
    return averaged


@torch.no_grad()
def own_references(model: Policy, sampler: ChunkSampler, rows: np.ndarray, state_now: np.ndarray, s: int,
                   gen: torch.Generator, dev: torch.device) -> torch.Tensor:  # fmt: skip
    """The model's own plan for each row's time, made s steps earlier: a plain chunk sampled at
    row - s (N Euler steps, the current weights), its tail [s:] re-indexed to the row and padded,
    normalised relative to the row's state. Rows without s earlier steps in their episode
    reference the chunk planned at the episode's first row. Returns (b, h, a) normalised."""
    from edge.sampler import pad_reference

    was = model.training
    model.eval()
    prev, _ = sampler.earlier(rows, s)
    image, tokens, state = sampler.observation(prev)
    obs = [torch.from_numpy(x).to(dev) for x in (image, tokens, state)]
    kv = model.prefix(*obs)
    h, a, n = model.cfg.horizon, model.cfg.action_dim, model.cfg.num_steps
    x = torch.randn((len(rows), h, a), generator=gen).to(dev)
    zeros = torch.zeros(len(rows), h, device=dev)
    for k in range(n):
        x = x + model.head(x, torch.full_like(zeros, k / n), zeros, obs[2], kv) / n
    model.train(was)
    norm = sampler.norm
    raw_prev = norm.unaction(x.cpu().numpy(), sampler.states(prev))
    shift = np.minimum(rows - prev, h - 1)  # s, or fewer at an episode's start
    tail = np.stack([pad_reference(raw_prev[i : i + 1, shift[i] :], h)[0] for i in range(len(rows))])
    raw_state_now = sampler.states(rows)
    return torch.from_numpy(norm.action(tail, raw_state_now))


def _resume_into(out: Path, cfg: TrainConfig, data_sha: str, model: Policy, opt) -> tuple[int, str]:
    """Load a run's weights and optimizer for --resume; returns (step, log text). Refuses a run
    of another method, on other data, or already at or past --steps."""
    from edge.outputs import is_kind

    if not is_kind(out, "run"):
        raise CheckpointError(f"--resume: {out} is not a training run (no {checkpoint.TRAINER}); "
                              "start a new run without --resume")  # fmt: skip
    ck = checkpoint.load(out)
    if ck.train_cfg.method != cfg.method:
        raise UsageError(
            f"--resume: {out} is a {ck.train_cfg.method} run; it cannot continue as --method {cfg.method}"
        )
    if ck.train_cfg.ema_decay != cfg.ema_decay:
        raise UsageError(f"--resume: {out} was trained with --ema-decay {ck.train_cfg.ema_decay}; "
                         f"resume it with the same, not {cfg.ema_decay}")  # fmt: skip
    recorded = ck.meta.get("data", {}).get("sha256")
    if recorded and recorded != data_sha:
        raise UsageError(f"--resume: {out} was trained on data with sha256 {recorded[:12]}..., "
                         f"--data has {data_sha[:12]}...; resume with the same dataset")  # fmt: skip
    try:
        start = int(json.loads((out / checkpoint.TRAINER).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"--resume: {out}/{checkpoint.TRAINER} is unreadable ({e})") from None
    if start >= cfg.steps:
        raise UsageError(f"--resume: {out} is already at step {start}; pass --steps larger than {start}")
    model.load_state_dict(ck.model.state_dict())  # copies into the parameters on their device
    checkpoint.restore_optimizer(opt, out / checkpoint.OPTIMIZER)
    log = out / checkpoint.LOG
    return start, log.read_text() if log.exists() else ""


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def run(a: argparse.Namespace) -> int:
    if getattr(a, "policy", "reference") != "reference":  # LeRobot policies: legato/adapters/lerobot_train.py
        from legato.adapters.lerobot_train import run as run_lerobot

        return run_lerobot(a)
    cfg = config_from_args(a)
    pcfg = PolicyConfig(
        velocity_form=a.velocity_form, horizon=horizon_from_args(a), width=getattr(a, "width", 96)
    )
    out = train(a.data, a.out, cfg, pcfg, resume=a.resume, device=a.device, force=getattr(a, "force", False))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {out}")
    return 0


def main() -> int:
    from edge.cliargs import Parser

    p = Parser(prog="python -m legato.train", description="train a flow policy (torchrun-able)")
    add_arguments(p)
    return run(p.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
