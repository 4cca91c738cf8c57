"""A stand-in app for the pins in ../requirements.txt: it imports each one and uses the C one.

Run in a runtime image, it shows that every wheel imports there (its shared libraries bundled,
its ABI right) with no compiler in the image to fall back on.
"""

from __future__ import annotations

import pw_app
import pw_cext
import pw_haswheel
import pw_pure


def main() -> None:
    for module in (pw_app, pw_cext, pw_haswheel, pw_pure):
        print(f"imported {module.__name__} from {module.__file__}")
    print("pw_cext.add(2, 3) =", pw_cext.add(2, 3))


if __name__ == "__main__":
    main()
