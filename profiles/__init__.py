"""Device profiles as data: one TOML file per target (edge.profiles loads and validates them).

A package only so that `pip install legato-edge` carries the TOML files to the robot."""
