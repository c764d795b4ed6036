"""The simulator's demonstrations as a LeRobotDataset v3 (`legato sim demos --format lerobot`).

Per step: the camera frame (observation.images.top, uint8 (H, W, 3) rendered from the scene and
the joint state, as the policy sees it), observation.state = joint positions (rad) then
velocities (rad/s), action = the expert's clean joint-position targets (rad),
observation.environment_state = the instructed target's and the obstacle's (x, y) (m; LeRobot's
feature for privileged scene state, which a policy may learn to predict but the robot never
feeds), and the episode's instruction as its task. 50 Hz, the arm's control rate.

Only the expert's successful episodes are written (as a person keeps only the good takes of a
teleoperated session; the .npz format keeps all and its sampler skips the failures): the noisy
expert sometimes clips the obstacle, and imitating those episodes teaches collisions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from legato.demos import Demos
from legato.lerobot_dataset import EpisodeData, write_dataset
from sim.camera import Camera
from sim.language import instruction
from sim.scene import COLORS

CAMERA = "observation.images.top"
ENV_STATE = "observation.environment_state"
ENV_STATE_NAMES = ["goal_x", "goal_y", "obstacle_x", "obstacle_y"]


def joint_names(j: int) -> list[str]:
    return [f"joint_{i}" for i in range(j)]


def features(demos: Demos) -> dict[str, dict]:
    cam, j = demos.task.camera, demos.task.arm.num_joints
    names = joint_names(j)
    return {
        CAMERA: {
            "dtype": "video",
            "shape": [cam.height, cam.width, 3],
            "names": ["height", "width", "channels"],
        },
        "observation.state": {
            "dtype": "float32",
            "shape": [2 * j],
            "names": names + [f"{n}.vel" for n in names],
        },
        ENV_STATE: {"dtype": "float32", "shape": [len(ENV_STATE_NAMES)], "names": ENV_STATE_NAMES},
        "action": {"dtype": "float32", "shape": [j], "names": names},
    }


def episodes(demos: Demos) -> Iterator[EpisodeData]:
    camera = Camera(demos.task.arm, demos.task.scene, demos.task.camera)
    for e in np.flatnonzero(demos.success):
        lo, hi = int(demos.offsets[e]), int(demos.offsets[e + 1])
        scene = demos.scenes.select(np.full(hi - lo, e))
        frames = camera.render(scene, demos.q[lo:hi].astype(np.float64))
        task = instruction(COLORS[int(demos.scenes.instructed[e])], int(demos.template[e]))
        state = np.concatenate([demos.q[lo:hi], demos.qd[lo:hi]], -1)
        env_state = np.concatenate([scene.goal, scene.obstacle], -1)  # (n, 4), as TaskView.aux
        columns = {"observation.state": state, ENV_STATE: env_state, "action": demos.action[lo:hi]}
        yield EpisodeData(task, columns, {CAMERA: frames})


def write(demos: Demos, root: Path) -> None:
    """Write into `root` (empty; the caller swaps it in atomically)."""
    write_dataset(
        root,
        int(round(demos.task.arm.control_hz)),
        features(demos),
        episodes(demos),
        robot_type="legato-sim-arm",
    )
