"""RP2040 board glue for legato_fw (MicroPython). Runs only on the board.

Wiring: UART0 TX=GP0, RX=GP1 at 1 Mbit/s to the host (a USB-UART adapter or the Jetson's UART,
3.3 V levels); hobby servos on GP2.. (one PWM pin per joint, 50 Hz, 500..2500 us for -pi/2..pi/2).
Hobby servos report no position: ``q`` is the last commanded output, so POSITION_LIMIT and
tracking checks are only as good as that; use a board with encoders for measured positions.

Tick 200 Hz: MicroPython on a 133 MHz Cortex-M0+ handles a 6-joint frame (COBS + CRC-32C + parse)
in a few hundred microseconds with the native emitter; stream setpoints at <= 100 Hz.
"""

import time

import machine
from legato_fw import Controller

N_JOINTS = 6
TICK_HZ = 200
PWM_PINS = (2, 3, 4, 5, 6, 7)


class ServoPwm:
    def __init__(self, pins) -> None:
        self.pwm = []
        for p in pins:
            pwm = machine.PWM(machine.Pin(p))
            pwm.freq(50)
            self.pwm.append(pwm)
        n = len(pins)
        self.q, self.v, self.tau = [0.0] * n, [0.0] * n, [0.0] * n

    def step(self, targets, dt: float, v_max) -> None:
        for j, pwm in enumerate(self.pwm):
            if targets is None:
                pwm.duty_ns(0)  # no pulse: the servo goes limp (torque off)
                self.v[j] = 0.0
                continue
            step = max(-v_max[j] * dt, min(v_max[j] * dt, targets[j] - self.q[j]))
            self.v[j] = step / dt
            self.q[j] += step
            pulse_us = 1500 + self.q[j] * (1000 / 1.5707963)
            pwm.duty_ns(int(max(500, min(2500, pulse_us)) * 1000))


def run() -> None:
    uart = machine.UART(0, baudrate=1_000_000, tx=machine.Pin(0), rx=machine.Pin(1), rxbuf=2048, txbuf=2048)
    ctrl = Controller(N_JOINTS, TICK_HZ, time.ticks_us, ServoPwm(PWM_PINS))
    period = 1_000_000 // TICK_HZ
    next_tick = time.ticks_add(time.ticks_us(), period)
    while True:
        n = uart.any()
        if n:
            for f in ctrl.feed(uart.read(n), time.ticks_us()):
                uart.write(f)
        if time.ticks_diff(time.ticks_us(), next_tick) >= 0:
            next_tick = time.ticks_add(next_tick, period)
            for f in ctrl.tick(time.ticks_us()):
                uart.write(f)


run()
