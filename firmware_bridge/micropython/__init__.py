"""Reference firmware in MicroPython (RP2040). ``legato_fw`` is the protocol core and firmware rules
in plain Python that runs under MicroPython and CPython alike (tested against the host bridge);
``main.py`` is the board glue (UART, PWM) and runs only on the board. Copy both to the board."""
