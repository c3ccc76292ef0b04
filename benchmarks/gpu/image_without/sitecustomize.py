"""Dry runs of run.sh: make SimpleITK and nilearn unimportable, as they are on the GPU image.

So the CPU rehearsal fails where the GPU run would, if any step needs them.
"""

import sys

MISSING = ("SimpleITK", "nilearn")


class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU image)", name=name)
        return None


sys.meta_path.insert(0, _Missing())
