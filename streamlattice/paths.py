"""Where streamlattice keeps files: its package data, the jar cache, and state in a data dir.

From a source checkout, caches and state stay in the checkout (`.cache/`, `.streamlattice/`)
as the repository's scripts and tests expect; installed from a wheel, they go to the user's
XDG directories. Environment variables override both.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# The built-in lattice (package data; in a checkout, a link to the repository's lattice.toml).
DEFAULT_LATTICE = PACKAGE_DIR / "lattice.toml"


@functools.cache
def checkout() -> Path | None:
    """The source checkout this package runs from, or None when it is installed."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "schemas").is_dir() else None


def _xdg(variable: str, fallback: str) -> Path:
    return Path(os.environ.get(variable) or Path.home() / fallback) / "streamlattice"


def cache_dir() -> Path:
    """Downloaded Kafka jars: $STREAMLATTICE_CACHE, else the checkout's .cache, else ~/.cache/streamlattice."""
    if env := os.environ.get("STREAMLATTICE_CACHE"):
        return Path(env)
    root = checkout()
    return root / ".cache" if root else _xdg("XDG_CACHE_HOME", ".cache")


def data_dir() -> Path:
    """State (dev broker data, supervisor, demo logs, built models of the built-in lattice):
    $STREAMLATTICE_HOME, else ./.streamlattice if it exists, else the checkout's .streamlattice,
    else ~/.local/share/streamlattice."""
    if env := os.environ.get("STREAMLATTICE_HOME"):
        return Path(env)
    local = Path(".streamlattice")
    if local.is_dir():
        return local.resolve()
    root = checkout()
    return root / ".streamlattice" if root else _xdg("XDG_DATA_HOME", ".local/share")


def default_models_base() -> Path:
    """What the built-in lattice's relative `model =` paths are relative to: the checkout (its
    models/ folder, as lattice.toml beside it says), else the data dir."""
    return checkout() or data_dir()
