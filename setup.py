"""Build hook: the wheel carries copies of the top-level recipes/ and stacks/ folders.

Users read and copy those folders in the source tree; an installed notme reads its copies under
`notme_mlx/bundled/` (see notme_mlx/resources.py). Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithBundled(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the source tree's folders
            return
        for kind in ("recipes", "stacks"):
            dst = Path(self.build_lib) / "notme_mlx" / "bundled" / kind
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(HERE / kind, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithBundled})
