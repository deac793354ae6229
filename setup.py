"""Packaging hook: the metadata is in pyproject.toml; this only copies the shipped collections and
schemas into the wheel as ``engine/_data/`` (engine/_shipped.py finds them there when installed,
beside ``engine/`` in a checkout).  Editable installs keep using the checkout's folders."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("collections", "schemas")


class BuildPyWithShipped(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder in SHIPPED:
            target = Path(self.build_lib) / "engine" / "_data" / folder
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(ROOT / folder, target,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            for folder in SHIPPED:
                base = Path(self.build_lib) / "engine" / "_data" / folder
                outputs += [str(base / p.relative_to(ROOT / folder))
                            for p in sorted((ROOT / folder).rglob("*")) if p.is_file()]
        return outputs


setup(cmdclass={"build_py": BuildPyWithShipped})
