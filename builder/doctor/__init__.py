"""`prewheel doctor`: the host that will run the images, and the target it needs.

`host` reads the NVIDIA driver, GPUs, glibc and CPU (under a `--root` for recorded trees);
`decide` judges them against the configured targets and the shipped compatibility data
(`builder/data/`); `pins` checks a requirements file's framework pins against a target;
`report` holds the conclusions. Only `host` touches the machine.
"""

from __future__ import annotations

from .decide import diagnose
from .host import read_host
from .pins import check_pins
from .report import DoctorReport, Problem

__all__ = ["DoctorReport", "Problem", "check_pins", "diagnose", "read_host"]
