"""Normalisation of states and action chunks, shared by training and the robot.

Actions are joint-position targets. The model sees them relative to the joint positions at
the chunk's observation (delta_i = a_i - q) and normalised per chunk index and joint:
    a_n[i, j] = (a[i, j] - q[j] - mean[i, j]) / std[i, j].
Early actions sit close to q and late ones far from it; per-index statistics give the flow
the same resolution at every index, where absolute normalisation would spend most of it on
the arm's whole range (the first actions' spread is 3-8x smaller than a joint's range here).
Convention: the first a entries of the state are the joint positions q, in the action order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOOR = 1e-2  # keeps near-constant dimensions from blowing up


@dataclass(frozen=True)
class Normalizer:
    state_mean: np.ndarray  # (s,)
    state_std: np.ndarray  # (s,)
    action_mean: np.ndarray  # (h, a) of a_i - q
    action_std: np.ndarray  # (h, a)

    @staticmethod
    def fit(states: np.ndarray, chunks: np.ndarray) -> Normalizer:
        """states (T, s), chunks (T, h, a) of raw joint targets -> statistics."""
        a = chunks.shape[-1]
        delta = chunks - states[:, None, :a]
        return Normalizer(
            states.mean(0).astype(np.float32),
            np.maximum(states.std(0), FLOOR).astype(np.float32),
            delta.mean(0).astype(np.float32),
            np.maximum(delta.std(0), FLOOR).astype(np.float32),
        )

    @property
    def horizon(self) -> int:
        return self.action_mean.shape[0]

    def state(self, x: np.ndarray) -> np.ndarray:
        """(b, s) raw -> normalised float32."""
        return ((x - self.state_mean) / self.state_std).astype(np.float32)

    def action(self, chunk: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Raw chunk (b, h, a) and raw state (b, s) -> normalised chunk (b, h, a) float32."""
        q = state[:, None, : chunk.shape[-1]]
        return ((chunk - q - self.action_mean) / self.action_std).astype(np.float32)

    def unaction(self, x: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Normalised chunk (b, h, a) and raw state (b, s) -> raw joint targets (b, h, a) float32."""
        q = state[:, None, : x.shape[-1]]
        return (x * self.action_std + self.action_mean + q).astype(np.float32)

    def to_dict(self) -> dict[str, list]:
        return {k: np.asarray(getattr(self, k), dtype=np.float64).tolist() for k in self.__dataclass_fields__}

    @staticmethod
    def from_dict(d: dict[str, list]) -> Normalizer:
        """Statistics from their JSON form; ValueError (one line) unless every array is present,
        finite, correctly shaped, and every std > 0."""
        if not isinstance(d, dict):
            raise ValueError(f"normalisation must be an object, got {type(d).__name__}")
        names = list(Normalizer.__dataclass_fields__)
        missing = [k for k in names if k not in d]
        if missing:
            raise ValueError(f"normalisation lacks {', '.join(missing)}")
        try:
            out = Normalizer(**{k: np.asarray(d[k], dtype=np.float32) for k in names})
        except (TypeError, ValueError) as e:
            raise ValueError(f"normalisation arrays are malformed ({e})") from None
        if out.state_mean.ndim != 1 or out.state_mean.shape != out.state_std.shape:
            raise ValueError(
                f"state statistics must be (s,), got {out.state_mean.shape}, {out.state_std.shape}"
            )
        if out.action_mean.ndim != 2 or out.action_mean.shape != out.action_std.shape:
            raise ValueError(f"action statistics must be (h, a), got {out.action_mean.shape}")
        for k in names:
            v = getattr(out, k)
            if not np.all(np.isfinite(v)):
                raise ValueError(f"normalisation {k} has non-finite values")
            if k.endswith("_std") and not np.all(v > 0):
                raise ValueError(f"normalisation {k} must be > 0 everywhere (min {float(v.min())})")
        return out
