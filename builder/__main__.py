from __future__ import annotations

from .noop import main

main()
