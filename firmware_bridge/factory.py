"""``open_bus``: the one way the runtime builds a bus from a device profile's ``[serial]`` table.

    bus = open_bus("feetech", port="/dev/ttyACM0", ids=[1, 2, 3, 4, 5, 6], period_s=0.02,
                   calibration="~/.cache/huggingface/lerobot/calibration/robots/so101_follower/arm.json")
    bus.start()
    ...
    bus.close()

``kind`` is "firmware" (this package's protocol, :class:`~firmware_bridge.bridge.FirmwareBridge`),
"feetech" or "dynamixel" (:class:`~firmware_bridge.servo_bus.ServoBus`). Keyword arguments are
the fields of the bus's frozen config, by name; an unknown one is a ValueError that lists the
allowed ones, so a typo in a profile fails at load time, not on the robot.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from firmware_bridge.interface import MotorBus

KINDS = ("firmware", "feetech", "dynamixel")


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _check(kind: str, cfg: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(cfg) - allowed
    if unknown:
        raise ValueError(f"{kind} bus: unknown settings {sorted(unknown)}; allowed: {sorted(allowed)}")


def open_bus(kind: str, **cfg: Any) -> MotorBus:
    """Build (not start) a bus. Settings by kind:

    - firmware: ``port`` (required), ``limits`` (JointLimits, required), ``baudrate``, and the
      BridgeConfig fields (``rate_hz``, ``watchdog_ms``, ``telemetry_hz``, ``timesync_period_s``,
      ``auto_enable``, ``close_timeout_s``).
    - feetech / dynamixel: the ServoBusConfig fields: ``port`` and ``ids`` (required; a list or
      "1-6"), ``baudrate``, ``period_s``, ``calibration`` (a Calibration or the path of a LeRobot
      calibration JSON), ``limits``, ``reply_timeout_s``, ``retries``, ``cycle_budget``,
      ``watchdog_ms``, ``goal_speed``, ``acceleration``, ``effort_scale``, ``big_endian``,
      ``fast_sync_read``, ``auto_enable``, ``write_homing``, ``reconnect_min_s``,
      ``reconnect_max_s``, ``setup_timeout_s``.
    """
    if kind == "firmware":
        from firmware_bridge.bridge import FirmwareBridge
        from firmware_bridge.config import BridgeConfig, LinkConfig

        bridge_fields = _fields(BridgeConfig)
        _check(kind, cfg, bridge_fields | {"port", "baudrate"})
        if "port" not in cfg or "limits" not in cfg:
            raise ValueError("firmware bus: port and limits are required")
        link = LinkConfig(cfg.pop("port"), cfg.pop("baudrate", 1_000_000))
        return FirmwareBridge(BridgeConfig(**cfg), link)
    if kind in ("feetech", "dynamixel"):
        from firmware_bridge.calibration import Calibration
        from firmware_bridge.servo_bus import ServoBus, ServoBusConfig
        from firmware_bridge.servo_emulator import parse_ids

        _check(kind, cfg, _fields(ServoBusConfig))
        if "port" not in cfg or "ids" not in cfg:
            raise ValueError(f"{kind} bus: port and ids are required")
        if isinstance(cfg["ids"], str):
            cfg["ids"] = parse_ids(cfg["ids"])
        cal = cfg.get("calibration")
        if isinstance(cal, (str, os.PathLike)):
            cfg["calibration"] = Calibration.from_lerobot(os.path.expanduser(os.fspath(cal)))
        return ServoBus(kind, ServoBusConfig(**cfg))
    raise ValueError(f"unknown bus kind {kind!r}; allowed: {', '.join(KINDS)}")
