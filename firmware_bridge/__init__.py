"""Serial link to motor controllers: wire protocol, host bridge, emulated controller.

The edge runtime needs only :class:`MotorBus` (``firmware_bridge.interface``) and a way to build
one (:class:`FirmwareBridge` with :class:`BridgeConfig`, :class:`LinkConfig`, :class:`JointLimits`).
Exports resolve lazily (PEP 562) so ``import firmware_bridge.cli`` stays cheap (no numpy, no
pyserial until a command runs). Never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MotorBus": "firmware_bridge.interface",
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
