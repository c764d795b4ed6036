"""The task's configuration in one frozen dataclass, serialisable to and from JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sim.arm import ArmConfig
from sim.camera import CameraConfig
from sim.expert import ExpertConfig
from sim.scene import SceneConfig


@dataclass(frozen=True)
class TaskConfig:
    name: str = "planar-reach"  # the task registry's name (sim.tasks)
    arm: ArmConfig = field(default_factory=ArmConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    max_steps: int = 250  # control steps before an episode times out (5 s at 50 Hz)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TaskConfig:
        def tup(sub: dict[str, Any]) -> dict[str, Any]:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in sub.items()}

        if d.get("name", "planar-reach") != "planar-reach":
            raise ValueError(f"task {d.get('name')!r} is not the planar arm")
        return TaskConfig(
            arm=ArmConfig(**tup(d["arm"])),
            scene=SceneConfig(**tup(d["scene"])),
            camera=CameraConfig(**tup(d["camera"])),
            expert=ExpertConfig(**tup(d["expert"])),
            max_steps=int(d["max_steps"]),
        )
