"""FirmwareBridge: the :class:`~firmware_bridge.interface.MotorBus` of this package's protocol.

Two threads: the link's reader (frames in) and the stream (frames out). ``send_setpoint`` only
validates, clamps and stores the target; the stream sends the newest target every period, so
the controller's watchdog is fed at the stream rate whatever the edge loop is doing. While the
controller is not (yet) enabled the stream sends heartbeats. After every (re)connect the stream
first runs the handshake: HELLO -> CAPABILITIES, CONFIGURE_LIMITS, CONFIGURE_WATCHDOG, clear a
latched WATCHDOG fault (the one the unplug itself caused; any other fault stays latched until the
user clears it) and TORQUE on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from firmware_bridge.bus_base import BusBase
from firmware_bridge.config import BridgeConfig, LinkConfig
from firmware_bridge.errors import LinkError
from firmware_bridge.interface import LinkHealth, Telemetry
from firmware_bridge.link import SerialLink
from firmware_bridge.messages import (
    Capabilities,
    ClearFaults,
    ConfigureLimits,
    ConfigureWatchdog,
    Fault,
    FaultReport,
    Frame,
    Heartbeat,
    Hello,
    Setpoint,
    State,
    TelemetryMsg,
    TimeSyncRequest,
    TimeSyncResponse,
    Torque,
)
from firmware_bridge.stats import RoundTrip
from firmware_bridge.streamer import PeriodicThread
from firmware_bridge.timesync import ClockSync
from firmware_bridge.transport import Transport

log = logging.getLogger(__name__)


class FirmwareBridge(BusBase):
    """Streams setpoints to one controller over one port. Use as a context manager or close()."""

    def __init__(
        self,
        config: BridgeConfig,
        link: LinkConfig,
        *,
        open_transport: Callable[[], Transport] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config.limits)
        self.config = config
        self._clock = clock
        self._target: tuple[float, ...] | None = None  # immutable: handed to the stream without a lock
        self._telemetry: Telemetry | None = None
        self._last_tel: TelemetryMsg | None = None
        self._caps: Capabilities | None = None
        self._caps_event = threading.Event()
        self._configured = threading.Event()
        self._configured_gen = 0
        self._enabled = False
        self._next_handshake = 0.0
        self._next_sync = 0.0
        self._closed = False
        self.last_fault: FaultReport | None = None
        self.rtt = RoundTrip()
        self.clock_sync = ClockSync()
        self.setpoints_sent = 0
        self.stream_errors = 0
        self.reconnects = 0
        # telemetry older than this marks every joint stale (4 telemetry periods, at least 20 ms)
        self._stale_after_s = max(4.0 / config.telemetry_hz, 0.02)
        self.link = SerialLink(link, open_transport, on_frame=self._on_frame, clock=clock)
        self.stream = PeriodicThread(config.rate_hz, self._tick, clock=clock, name="fw-stream")

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, timeout_s: float = 3.0) -> None:
        """Open the port, configure (and enable) the controller, start streaming. Raises LinkError
        (after releasing everything) when the controller is not configured within ``timeout_s``."""
        self.link.start()
        self.stream.start()
        if not self._configured.wait(timeout_s):
            self.close()
            raise LinkError(f"controller on {self.link.config.port!r} not configured within {timeout_s} s")

    def __enter__(self) -> FirmwareBridge:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop streaming, send torque-off (acknowledged if possible, else fire-and-forget), join
        both threads, release the port. No fault bit, NACK or port error stops it; never raises."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stream.stop()
            self._torque_off_best_effort()
        except Exception:  # close must finish: the port is released below whatever happened
            log.exception("torque-off on close failed")
        finally:
            self.link.close()

    def _torque_off_best_effort(self) -> None:
        if not self.link.connected:
            return
        budget = self.config.close_timeout_s
        try:
            # the controller accepts TORQUE off in every state, faults latched included
            self.link.request(Torque(False), timeout_s=budget / 3, retries=3)
            self._enabled = False
            return
        except LinkError as exc:
            log.warning("torque-off not acknowledged (%s); sending it unacknowledged", exc)
        for _ in range(2):
            try:
                self.link.send(Torque(False))
            except LinkError:
                return  # port gone: the controller's watchdog holds the motors
        self._enabled = False

    # ---- MotorBus --------------------------------------------------------------------------
    def _store_target_impl(self, target: tuple[float, ...]) -> None:
        self._target = target  # the stream sends it at the next tick

    def latest_telemetry(self) -> Telemetry | None:
        return self._telemetry

    def health(self) -> LinkHealth:
        rx, tx, tel = self.link.rx, self.link.tx, self._last_tel
        p = self.rtt.percentiles()
        est = self.clock_sync.estimate
        t = self._telemetry
        return LinkHealth(
            connected=self.link.connected,
            configured=self._configured.is_set() and self._configured_gen == self.link.generation,
            torque_enabled=bool(tel and tel.state & State.TORQUE_ENABLED),
            faults=tel.faults if tel else 0,
            frames_sent=tx.frames,
            frames_received=rx.frames,
            decode_errors=rx.decode_errors,
            crc_errors=rx.errors.get("crc", 0),
            rx_seq_gaps=rx.seq_gaps,
            controller_rx_bad=tel.rx_bad if tel else 0,
            controller_rx_gaps=tel.rx_gap if tel else 0,
            controller_rx_stale=tel.rx_stale if tel else 0,
            setpoints_sent=self.setpoints_sent,
            setpoints_rejected=self.setpoints_rejected,
            setpoints_clamped=self.setpoints_clamped,
            reconnects=self.reconnects,
            stream_overruns=self.stream.overruns,
            rtt_p50_ms=p[0] if p else None,
            rtt_p99_ms=p[1] if p else None,
            clock_offset_us=est.offset_us if est else None,
            clock_drift_ppm=est.drift_ppm if est else None,
            telemetry_age_s=(self._clock() - t.received_at) if t else None,
            stale_joints=0 if t is None or self._clock() - t.received_at < self._stale_after_s else self._n,
            missed_replies=self.link.ack_timeouts,
        )

    # ---- extra controls (not part of MotorBus) ---------------------------------------------
    def clear_faults(self, mask: int = 0xFFFF) -> None:
        """Clear latched faults and, with ``auto_enable``, enable torque again. Raises LinkError."""
        self.link.request(ClearFaults(mask))
        if self.config.auto_enable:
            self.link.request(Torque(True))
            self._enabled = True

    def set_torque(self, enable: bool) -> None:
        """Enable (hold where the motors are) or disable torque. Raises LinkError."""
        self.link.request(Torque(enable))
        self._enabled = enable

    @property
    def capabilities(self) -> Capabilities | None:
        return self._caps

    # ---- stream thread ---------------------------------------------------------------------
    def _tick(self, k: int, deadline: float) -> None:
        link = self.link
        if not link.connected:
            return
        gen = link.generation
        if gen != self._configured_gen:
            if deadline >= self._next_handshake:
                self._handshake(gen)
                self.stream.resync()  # the handshake took many periods on purpose
            return
        try:
            target = self._target
            if self._enabled and target is not None:
                t = self._clock()
                seq = link.send(Setpoint(target))
                self.rtt.sent(seq, t)
                self.setpoints_sent += 1
            else:
                link.send(Heartbeat())
            if deadline >= self._next_sync:
                self._next_sync = deadline + self.config.timesync_period_s
                link.send(TimeSyncRequest(link.host_us()))
        except LinkError:
            self.stream_errors += 1  # the reader notices the lost port and reconnects

    def _handshake(self, gen: int) -> None:
        link, cfg = self.link, self.config
        lim = cfg.limits
        try:
            self._caps_event.clear()
            for _ in range(link.config.retries):
                link.send(Hello())
                if self._caps_event.wait(link.config.ack_timeout_s):
                    break
            else:
                raise LinkError("no CAPABILITIES reply to HELLO")
            caps = self._caps
            if caps is None or caps.n_joints != lim.n_joints:
                n = caps.n_joints if caps else None
                raise LinkError(f"controller has {n} joints, limits are for {lim.n_joints}")
            link.request(ConfigureLimits(lim.position_min, lim.position_max, lim.velocity_max, lim.step_max))
            link.request(ConfigureWatchdog(cfg.watchdog_ms, cfg.telemetry_hz))
            self.clock_sync.reset()  # a replugged controller may have rebooted: a new clock
            self.rtt.reset()
            if self._configured_gen != 0:
                self.reconnects += 1
            self._configured_gen = gen
            self._configured.set()
            self._enabled = False
            if cfg.auto_enable:
                link.request(ClearFaults(Fault.WATCHDOG))
                link.request(Torque(True))
                self._enabled = True
        except LinkError as exc:
            # a NACK on enable (another fault latched) leaves us configured, streaming heartbeats
            log.warning("controller handshake: %s", exc)
            self._next_handshake = self._clock() + 0.2

    # ---- reader thread ---------------------------------------------------------------------
    def _on_frame(self, frame: Frame, now: float) -> None:
        msg = frame.msg
        if isinstance(msg, TelemetryMsg):
            self._last_tel = msg
            self.rtt.echo(msg.last_applied_seq, now)
            sent_us = self.clock_sync.to_host_us(frame.t_us, now * 1e6)
            sent_at = None if sent_us is None else sent_us * 1e-6
            # one frame measures every joint at once: at its send time, or its arrival before sync
            measured = np.full(len(msg.positions), now if sent_at is None else min(sent_at, now))
            measured.setflags(write=False)
            self._telemetry = Telemetry(
                positions=_frozen(msg.positions),
                velocities=_frozen(msg.velocities),
                efforts=_frozen(msg.efforts),
                measured_at=measured,
                last_applied_seq=msg.last_applied_seq,
                controller_time_us=frame.t_us,
                received_at=now,
                sent_at=sent_at,
                torque_enabled=bool(msg.state & State.TORQUE_ENABLED),
                holding=bool(msg.state & State.HOLDING),
                faults=msg.faults,
            )
        elif isinstance(msg, TimeSyncResponse):
            self.clock_sync.add(msg.t1_us, msg.t2_us, msg.t3_us, int(now * 1e6))
        elif isinstance(msg, Capabilities):
            self._caps = msg
            self._caps_event.set()
        elif isinstance(msg, FaultReport):
            self.last_fault = msg
            log.warning("controller fault latched: new=0x%04x all=0x%04x joint=%d value=%g",
                        msg.new, msg.latched, msg.joint, msg.value)  # fmt: skip


def _frozen(values: tuple[float, ...]) -> np.ndarray:
    a = np.array(values, dtype=np.float32)
    a.setflags(write=False)
    return a
