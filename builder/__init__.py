"""prewheel: prebuild wheels per target and serve them from one index."""

from __future__ import annotations

__version__ = "0.1.0"

# Bump when the way a wheel is built, repaired or verified changes its bytes:
# it is part of every cache key.
RECIPE_VERSION = "5"  # 5: fixed build paths, SOURCE_DATE_EPOCH, normalised wheels, SBOM
