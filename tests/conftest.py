import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools import host  # noqa: E402

host.bootstrap_host()

ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")


@pytest.fixture(scope="session")
def pack():
    return host.load_pack()


@pytest.fixture(scope="session")
def artifacts_dir():
    os.makedirs(ARTIFACTS, exist_ok=True)
    return ARTIFACTS
