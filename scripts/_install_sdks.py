"""Install each ``sdk-<revision>`` pin group of pyproject.toml into ``.cache/sdk/<revision>``.

Idempotent: a directory whose ``PINS`` file lists exactly the group's pins is left as it is (no
network needed).  Otherwise the group is installed into a fresh temporary directory, which then
replaces the old one, so a failed install never leaves half a directory behind.  Exits non-zero
with pip's message when an install fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "sdk"


def groups() -> dict[str, list[str]]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    return {name.removeprefix("sdk-"): pins for name, pins in extras.items() if name.startswith("sdk-")}


def install(revision: str, pins: list[str]) -> None:
    target = CACHE / revision
    wanted = "\n".join(sorted(pins)) + "\n"
    marker = target / "PINS"
    if marker.is_file() and marker.read_text(encoding="utf-8") == wanted:
        return
    tmp = CACHE / f".{revision}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-warn-conflicts",
           "--no-deps", "--target", str(tmp), *pins]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        noise = ("is ignored: it is neither a file nor a directory",)
        message = "\n".join(line for line in done.stderr.splitlines() if not any(n in line for n in noise))
        sys.exit(f"scripts/setup: cannot install Klaviyo's SDK for revision {revision} ({' '.join(pins)}):\n{message}")
    (tmp / "PINS").write_text(wanted, encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    print(f"installed Klaviyo's SDK for revision {revision} into {target.relative_to(ROOT)}")


def main() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    for revision, pins in sorted(groups().items()):
        install(revision, pins)


if __name__ == "__main__":
    main()
