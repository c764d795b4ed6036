"""Normalisation of states and action chunks as data: shared by training and the robot.

Two kinds, chosen by the adapter that exported the bundle (docs/adapters.md):

- ``state-relative`` (the project's own model): actions are joint-position targets seen relative
  to the joint positions q at the chunk's observation and normalised per chunk index and joint,
      a_n[i, j] = (a[i, j] - q[j] - mean[i, j]) / (std[i, j] + action_eps),
  unnormalised as a = a_n std + mean + q. Early actions sit close to q and late ones far from
  it; per-index statistics give the flow the same resolution at every index, where absolute
  normalisation would spend most of it on the arm's whole range (the first actions' spread is
  3-8x smaller than a joint's range here). Convention: the first a entries of the state are the
  joint positions q, in the action order.
- ``mean-std`` (LeRobot's MEAN_STD): a_n = (a - mean) / (std + action_eps), a = a_n std + mean
  (LeRobot unnormalises without the epsilon), with per-joint statistics (a,) or per-index (h, a).

The state is (s - state_mean) / (state_std + state_eps) in both. Shapes: s state dim, h chunk
length, a action dim; every array float32 on the way out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOOR = 1e-2  # keeps near-constant dimensions from blowing up
KINDS = ("state-relative", "mean-std")
_ARRAYS = ("state_mean", "state_std", "action_mean", "action_std")


@dataclass(frozen=True)
class Normalizer:
    state_mean: np.ndarray  # (s,)
    state_std: np.ndarray  # (s,)
    action_mean: np.ndarray  # (h, a) or (a,): of a_i - q (state-relative) or of a_i (mean-std)
    action_std: np.ndarray  # same shape as action_mean
    kind: str = "state-relative"  # one of KINDS
    state_eps: float = 0.0  # added to state_std when normalising (LeRobot: 1e-8)
    action_eps: float = 0.0  # added to action_std when normalising (never when unnormalising)

    @staticmethod
    def fit(states: np.ndarray, chunks: np.ndarray) -> Normalizer:
        """states (T, s), chunks (T, h, a) of raw joint targets -> state-relative statistics."""
        a = chunks.shape[-1]
        delta = chunks - states[:, None, :a]
        return Normalizer(
            states.mean(0).astype(np.float32),
            np.maximum(states.std(0), FLOOR).astype(np.float32),
            delta.mean(0).astype(np.float32),
            np.maximum(delta.std(0), FLOOR).astype(np.float32),
        )

    @property
    def relative(self) -> bool:
        """Actions are relative to the joint positions at the observation."""
        return self.kind == "state-relative"

    @property
    def horizon(self) -> int | None:
        """h for per-index statistics, None for per-joint ones."""
        return self.action_mean.shape[0] if self.action_mean.ndim == 2 else None

    def state(self, x: np.ndarray) -> np.ndarray:
        """(b, s) raw -> normalised float32."""
        return ((x - self.state_mean) / (self.state_std + np.float32(self.state_eps))).astype(np.float32)

    def action(self, chunk: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Raw chunk (b, h, a) and raw state (b, s) -> normalised chunk (b, h, a) float32."""
        std = self.action_std + np.float32(self.action_eps) if self.action_eps else self.action_std
        if self.relative:
            q = state[:, None, : chunk.shape[-1]]
            return ((chunk - q - self.action_mean) / std).astype(np.float32)
        return ((chunk - self.action_mean) / std).astype(np.float32)

    def unaction(self, x: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Normalised chunk (b, h, a) and raw state (b, s) -> raw joint targets (b, h, a) float32."""
        if self.relative:
            q = state[:, None, : x.shape[-1]]
            return (x * self.action_std + self.action_mean + q).astype(np.float32)
        return (x * self.action_std + self.action_mean).astype(np.float32)

    def to_dict(self) -> dict:
        """The JSON form; a state-relative normaliser without epsilons writes only its arrays
        (the form checkpoints have always had)."""
        out: dict = {k: np.asarray(getattr(self, k), dtype=np.float64).tolist() for k in _ARRAYS}
        if self.kind != "state-relative" or self.state_eps or self.action_eps:
            out.update(kind=self.kind, state_eps=self.state_eps, action_eps=self.action_eps)
        return out

    @staticmethod
    def from_dict(d: dict) -> Normalizer:
        """Statistics from their JSON form; ValueError (one line) unless every array is present,
        finite, correctly shaped, and every std > 0 (or std + eps > 0)."""
        if not isinstance(d, dict):
            raise ValueError(f"normalisation must be an object, got {type(d).__name__}")
        missing = [k for k in _ARRAYS if k not in d]
        if missing:
            raise ValueError(f"normalisation lacks {', '.join(missing)}")
        kind = d.get("kind", "state-relative")
        if kind not in KINDS:
            raise ValueError(f"normalisation kind {kind!r} is not one of {', '.join(KINDS)}")
        eps = {}
        for k in ("state_eps", "action_eps"):
            v = d.get(k, 0.0)
            if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v) or v < 0:
                raise ValueError(f"normalisation {k} must be a finite number >= 0, got {v!r}")
            eps[k] = float(v)
        try:
            arrays = {k: np.asarray(d[k], dtype=np.float32) for k in _ARRAYS}
        except (TypeError, ValueError) as e:
            raise ValueError(f"normalisation arrays are malformed ({e})") from None
        out = Normalizer(**arrays, kind=kind, **eps)
        if out.state_mean.ndim != 1 or out.state_mean.shape != out.state_std.shape:
            raise ValueError(
                f"state statistics must be (s,), got {out.state_mean.shape}, {out.state_std.shape}"
            )
        if (
            out.action_mean.ndim not in (1, 2)
            or out.action_mean.shape != out.action_std.shape
            or (out.relative and out.action_mean.ndim != 2)
        ):
            want = "(h, a)" if out.relative else "(h, a) or (a,)"
            raise ValueError(
                f"action statistics must be {want} each, got action_mean "
                f"{out.action_mean.shape} and action_std {out.action_std.shape}"
            )
        for k in _ARRAYS:
            v = getattr(out, k)
            if not np.all(np.isfinite(v)):
                raise ValueError(f"normalisation {k} has non-finite values")
            e = eps["state_eps" if k.startswith("state") else "action_eps"]
            if k.endswith("_std") and not np.all(v + e > 0):
                raise ValueError(f"normalisation {k} must be > 0 everywhere (min {float(v.min())})")
        return out
