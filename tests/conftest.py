import os
from pathlib import Path

import pytest

from simllm.sim.replica import Replica

# every incremental count of the running sequences' KV blocks is checked against a full recount
Replica.check_blocks = True

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SIMLLM_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found at {SHARED_DATA}: validation against measured data skipped")
    return SHARED_DATA
