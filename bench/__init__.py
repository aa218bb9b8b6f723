"""scabench's harness: configs, grids, runner, results store, synthetic studies and the CLI."""

import os as _os

# Spinning OpenMP threads collapse torch's CPU speed (5x measured here) when other processes
# share the cores. Set before torch is first imported (the CLI and every runner child import
# bench first); a value set by the user wins. detectors/__init__.py does the same for library use.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
