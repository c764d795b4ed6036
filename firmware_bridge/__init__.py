"""Serial link to motor controllers: wire protocol, host bridge, emulated controller.

The edge runtime needs only :class:`MotorBus` (``firmware_bridge.interface``) and one way to build
one: ``open_bus(kind, **settings)`` with kind "firmware" (:class:`FirmwareBridge`: :class:`BridgeConfig`,
:class:`LinkConfig`, :class:`JointLimits`), "feetech" or "dynamixel" (:class:`ServoBus` from a frozen
:class:`ServoBusConfig`: port, ids, baudrate, period_s, calibration, limits, reply_timeout_s, retries,
watchdog_ms ...; :class:`Calibration` reads LeRobot calibration files).
Exports resolve lazily (PEP 562) so ``import firmware_bridge.cli`` stays cheap (no numpy, no
pyserial until a command runs). Never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "open_bus": "firmware_bridge.factory",
    "MotorBus": "firmware_bridge.interface",
    "BusHealth": "firmware_bridge.interface",
    "ServoBus": "firmware_bridge.servo_bus",
    "ServoBusConfig": "firmware_bridge.servo_bus",
    "ServoHealth": "firmware_bridge.servo_bus",
    "Calibration": "firmware_bridge.calibration",
    "ServoError": "firmware_bridge.servo_common",
    "EmulatedServoBus": "firmware_bridge.servo_emulator",
    "ServoEmulatorConfig": "firmware_bridge.servo_emulator",
    "PortError": "firmware_bridge.portcheck",
    "Telemetry": "firmware_bridge.interface",
    "LinkHealth": "firmware_bridge.interface",
    "FirmwareBridge": "firmware_bridge.bridge",
    "BridgeConfig": "firmware_bridge.config",
    "LinkConfig": "firmware_bridge.config",
    "JointLimits": "firmware_bridge.config",
    "EmulatedController": "firmware_bridge.emulator",
    "EmulatorConfig": "firmware_bridge.emulator",
    "ProtocolError": "firmware_bridge.errors",
    "TransportError": "firmware_bridge.errors",
    "LinkError": "firmware_bridge.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware_bridge' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
