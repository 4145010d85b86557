"""The pure layers stay pure: placement/, wire/ and power/ import no Kafka client, no event loop, no sockets."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "streamlattice"
PURE = ("placement", "wire", "power")
FORBIDDEN = {"aiokafka", "faust", "asyncio", "socket"}
# placement/ and wire/ read nothing at all: no network either (power/feeds.py may fetch a feed)
NO_NETWORK = {"urllib", "http", "subprocess", "requests"}


def imported_modules(path: Path) -> set[str]:
    """The top-level names of every module a file imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("folder", PURE)
def test_pure_folders_import_no_kafka_event_loop_or_socket(folder: str) -> None:
    files = sorted((PACKAGE / folder).glob("*.py"))
    assert files, f"streamlattice/{folder}/ has no modules"
    offending = {f.name: sorted(imported_modules(f) & FORBIDDEN) for f in files}
    assert not {name: mods for name, mods in offending.items() if mods}


@pytest.mark.parametrize("folder", ("placement", "wire"))
def test_placement_and_wire_reach_no_network(folder: str) -> None:
    offending = {f.name: sorted(imported_modules(f) & NO_NETWORK) for f in sorted((PACKAGE / folder).glob("*.py"))}
    assert not {name: mods for name, mods in offending.items() if mods}


def test_pure_folders_import_only_pure_parts_of_the_package() -> None:
    allowed = {f"streamlattice.{f}" for f in PURE} | {"streamlattice.errors"}
    for folder in PURE:
        for f in sorted((PACKAGE / folder).glob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streamlattice"):
                    assert any(node.module == a or node.module.startswith(a + ".") for a in allowed), (
                        f"{folder}/{f.name} imports {node.module}"
                    )
