"""`legato bundle infer`: one chunk from recorded inputs, through the robot's denoiser. No torch.

    legato bundle infer --bundle B --obs OBS.npz [--noise N.npy] [--prev P.npy --delay D] --out A.npy

For checks like the golden fixtures, and for comparing a device with a workstation on the same
inputs. OBS.npz holds one observation with LeRobot's feature names:
- ``observation.images.<camera>``: uint8 (H, W, 3) RGB, one per camera of the bundle, at the size
  its adapter declares (the camera's frame as the policy takes it);
- ``observation.state``: (s,) in the robot's units;
- the language as ``task`` (a prompt string, tokenized with the bundle's tokenizer; for a policy
  whose state enters its prompt, pi0.5, the prompt is built here from the task and the state) or
  as ``observation.language.tokens`` (l,) ids with an optional ``observation.language.attention_mask``.
The noise is in the policy's own shape (H, action_pad) (LeRobot: (chunk_size, max_action_dim));
without --noise it is drawn from --seed. --prev is the chunk being executed from the new chunk's
index 0 on, (k, a) in the robot's units (k = H - s), with the delay D: the chunk is continued from
it (legato / hard-prefix bundles). The output is (H, a) in the robot's units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.adapter import AdapterSpec
from edge.errors import UsageError

IMAGE_KEY = "observation.images."
STATE_KEY = "observation.state"
TOKENS_KEY = "observation.language.tokens"
MASK_KEY = "observation.language.attention_mask"
TASK_KEY = "task"


def read_observation(path: str | Path, ad: AdapterSpec, bundle: str | Path) -> tuple[dict[str, np.ndarray],
                                                                                     np.ndarray | None,
                                                                                     np.ndarray | None,
                                                                                     np.ndarray]:  # fmt: skip
    """(images by camera, tokens, mask, state) from OBS.npz, each checked against the adapter."""
    from edge.language import PromptBuilder, encode_prompt, load_tokenizer, pad_tokens

    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise UsageError(f"--obs {path}: not a readable .npz ({e})") from None
    cams = {c.name: c for c in ad.observation.cameras}
    known = {IMAGE_KEY + n for n in cams} | {STATE_KEY, TOKENS_KEY, MASK_KEY, TASK_KEY}
    unknown = sorted(k for k in data if k.startswith("observation.") and k not in known)
    if unknown:
        takes = ", ".join(sorted(known - {MASK_KEY, TASK_KEY, TOKENS_KEY}))
        raise UsageError(f"--obs {path}: {unknown[0]} is not an input of this policy (it takes {takes} "
                         "and the language)")  # fmt: skip
    images = {}
    for name, c in cams.items():
        key = IMAGE_KEY + name
        if key not in data:
            raise UsageError(f"--obs {path}: lacks {key} (the bundle's cameras: {', '.join(cams)})")
        img = data[key]
        if img.dtype != np.uint8 or img.shape != (c.height, c.width, 3):
            raise UsageError(f"--obs {path}: {key} is {img.dtype}{list(img.shape)}, camera {name!r} takes "
                             f"uint8[{c.height}, {c.width}, 3] RGB")  # fmt: skip
        images[name] = img
    if STATE_KEY not in data:
        raise UsageError(f"--obs {path}: lacks {STATE_KEY}")
    state = np.asarray(data[STATE_KEY])
    if state.shape != (ad.state_dim,) or not np.issubdtype(state.dtype, np.floating):
        raise UsageError(f"--obs {path}: {STATE_KEY} is {state.dtype}{list(state.shape)}, the policy takes "
                         f"float[{ad.state_dim}]")  # fmt: skip
    if not np.all(np.isfinite(state)):
        raise UsageError(f"--obs {path}: {STATE_KEY} is not finite")
    lang = ad.observation.language
    tokens = mask = None
    if lang is not None:
        if TASK_KEY in data and TOKENS_KEY in data:
            raise UsageError(f"--obs {path}: give the language as {TASK_KEY} or as {TOKENS_KEY}, not both")
        if TASK_KEY in data:
            task = data[TASK_KEY]
            if task.dtype.kind != "U" or task.size != 1:
                raise UsageError(
                    f"--obs {path}: {TASK_KEY} must be one string, got {task.dtype}{list(task.shape)}"
                )
            if lang.prompt is not None:  # the state enters the prompt (pi0.5), built here
                tokens, mask = PromptBuilder(bundle, lang)(str(task.reshape(())), state.astype(np.float32))
            else:
                tokens, mask = encode_prompt(load_tokenizer(bundle, lang), str(task.reshape(())), lang)
        elif TOKENS_KEY in data:
            tokens, mask = pad_tokens(data[TOKENS_KEY], lang, source=f"--obs {path}: {TOKENS_KEY}")
            if MASK_KEY in data:  # as long as the ids given (LeRobot pads a batch to its longest)
                m, given = np.asarray(data[MASK_KEY]), np.asarray(data[TOKENS_KEY]).shape
                if m.shape != given:
                    raise UsageError(f"--obs {path}: {MASK_KEY} has shape {list(m.shape)}, the tokens "
                                     f"{list(given)}")  # fmt: skip
                mask[: m.size] = m.astype(np.bool_)
        else:
            raise UsageError(f"--obs {path}: lacks the instruction ({TASK_KEY} or {TOKENS_KEY})")
    return images, tokens, mask, state.astype(np.float32)


def _array(path: str | Path, flag: str) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"{flag} {path}: not a readable .npy ({e})") from None
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating) or not np.all(np.isfinite(x)):
        raise UsageError(f"{flag} {path}: expected a finite float array")
    return x


def infer(bundle: str | Path, obs: str | Path, noise: str | Path | None = None,
          prev: str | Path | None = None,
          delay: int | None = None, ramp: int | None = None, seed: int = 0, profile: str | None = None,
          fused: bool = False) -> np.ndarray:  # fmt: skip
    """One chunk (H, a) in the robot's units; the bundle verified, the engines onnxruntime's CPU
    (or the profile's), the denoiser the one `legato run` builds."""
    from edge.bundle import verify
    from edge.denoiser import denoiser_for
    from edge.policy import ChunkRequest, default_ramp

    if (prev is None) != (delay is None):
        raise UsageError("--prev and --delay go together (the executing chunk and the delay d)")
    if profile is not None:
        from edge.assembly import load

        man, _, den = load(str(bundle), profile, fused=fused)
    else:
        from edge.engine import EngineOptions, OrtEngine

        man = verify(bundle)
        graphs = ("prefix", "flow_head", "fused") if fused else ("prefix", "flow_head")
        if fused and "fused" not in man.graphs:
            raise UsageError(f"--fused: bundle {bundle} has no fused graph")
        opts = EngineOptions(intra_op_threads=1, inter_op_threads=1)
        engines = {g: OrtEngine(man.graph_path(g), opts, name=g) for g in graphs}
        den = denoiser_for(man.adapter, engines, source=f"bundle {bundle}")
    ad, spec = man.adapter, man.spec
    images, tokens, mask, state = read_observation(obs, ad, bundle)
    h, ap = spec.horizon, ad.action_pad
    if noise is None:
        eps = np.random.default_rng(seed).standard_normal((1, h, ap)).astype(np.float32)
    else:
        eps = _array(noise, "--noise").astype(np.float32)
        if eps.shape not in ((h, ap), (1, h, ap)):
            raise UsageError(f"--noise {noise}: shape {list(eps.shape)}, the policy samples [{h}, {ap}] "
                             "(chunk, padded action dim)")  # fmt: skip
    tail = None
    s = h // 2
    d = 0
    if prev is not None:
        tail = _array(prev, "--prev").astype(np.float32)
        k = tail.shape[0] if tail.ndim == 2 else 0
        if tail.ndim != 2 or tail.shape[1] != spec.action_dim or not 1 <= k < h:
            raise UsageError(f"--prev {prev}: shape {list(tail.shape)}; it is the executing chunk from the "
                             f"new chunk's index 0 on: [k, {spec.action_dim}] with 1 <= k < H = {h} "
                             "(k = H - s)")  # fmt: skip
        s, d = h - k, int(delay or 0)
    r = default_ramp(spec, d, s) if ramp is None else ramp
    req = ChunkRequest(d=d, s=s, r=r)
    image: Any = images if len(images) != 1 else next(iter(images.values()))
    den.set_observation(image, tokens, state, mask)
    return np.array(den.denoise(eps, tail, req), np.float32)
