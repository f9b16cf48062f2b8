from __future__ import annotations

import pytest

from infill_engine.engine import Engine


@pytest.fixture(scope="module")
def tiny() -> Engine:
    return Engine.tiny_random()
