import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture
def golden():
    """Reads a golden record written by Weft's Rust codec (shared/tests/golden)."""

    def read(name: str) -> bytes:
        return (REPO / "shared" / "tests" / "golden" / f"{name}.bin").read_bytes()

    return read
