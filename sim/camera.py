"""Top-down RGB camera rendered from the state: antialiased discs and capsules, batched.

The image is (b, height, width, 3) uint8 in row-major order with row 0 at the top (largest y).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.arm import ArmConfig, joint_positions
from sim.scene import COLOR_RGB, COLORS, SceneConfig, Scenes, segment_point_distance

BACKGROUND = np.array([28, 28, 32], dtype=np.float32)
OBSTACLE_RGB = np.array([140, 140, 140], dtype=np.float32)
ARM_RGB = np.array([235, 225, 200], dtype=np.float32)


@dataclass(frozen=True)
class CameraConfig:
    height: int = 48  # px
    width: int = 64  # px
    x_range: tuple[float, float] = (-1.3, 1.3)  # m, world x shown left to right
    y_range: tuple[float, float] = (-0.2, 1.75)  # m, world y shown bottom to top
    link_width: float = 0.04  # m, drawn arm thickness

    @property
    def pixel_size(self) -> float:
        return (self.x_range[1] - self.x_range[0]) / self.width


def pixel_centres(cam: CameraConfig) -> np.ndarray:
    """World coordinates of pixel centres, (height * width, 2), row 0 at the top."""
    xs = cam.x_range[0] + (np.arange(cam.width) + 0.5) * (cam.x_range[1] - cam.x_range[0]) / cam.width
    ys = cam.y_range[1] - (np.arange(cam.height) + 0.5) * (cam.y_range[1] - cam.y_range[0]) / cam.height
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], -1)


class Camera:
    """Renders scenes; holds the pixel grid so that each frame costs only the distance fields."""

    def __init__(self, arm: ArmConfig, scene_cfg: SceneConfig, cam: CameraConfig | None = None) -> None:
        self.arm, self.scene_cfg, self.cam = arm, scene_cfg, cam or CameraConfig()
        self._pix = pixel_centres(self.cam).astype(np.float32)  # (P, 2)
        k = scene_cfg.num_targets
        self._target_rgb = np.array([COLOR_RGB[c] for c in COLORS[:k]], dtype=np.float32)  # (k, 3)

    def _coverage(self, dist: np.ndarray, radius: np.ndarray | float) -> np.ndarray:
        """Antialiased coverage in [0, 1] of a shape at signed distance dist - radius."""
        return np.clip(0.5 - (dist - radius) / self.cam.pixel_size, 0.0, 1.0)

    def render(self, scenes: Scenes, q: np.ndarray) -> np.ndarray:
        """scenes (b), joint positions q (b, j) -> images (b, height, width, 3) uint8."""
        b = len(scenes)
        pix = self._pix[None]  # (1, P, 2)
        img = np.broadcast_to(BACKGROUND, (b, pix.shape[1], 3)).copy()

        def paint(cov: np.ndarray, rgb: np.ndarray) -> None:
            nonlocal img
            img += cov[..., None] * (rgb - img)

        d_obs = np.linalg.norm(pix - scenes.obstacle[:, None], axis=-1)  # (b, P)
        paint(self._coverage(d_obs, scenes.obstacle_r[:, None]), OBSTACLE_RGB)
        for k in range(scenes.targets.shape[1]):
            d = np.linalg.norm(pix - scenes.targets[:, k, None], axis=-1)
            paint(self._coverage(d, self.scene_cfg.target_radius), self._target_rgb[k])
        pts = joint_positions(self.arm, q)  # (b, j + 1, 2)
        for j in range(pts.shape[1] - 1):
            d = segment_point_distance(pts[:, j, None], pts[:, j + 1, None], pix)
            paint(self._coverage(d, self.cam.link_width / 2), ARM_RGB)
        return img.reshape(b, self.cam.height, self.cam.width, 3).round().astype(np.uint8)
