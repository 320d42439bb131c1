import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools import host  # noqa: E402

# FAITHFUL_HOST_VERSION=0.33.0 (or bash scripts/test.sh --host 0.33.0) targets the second host: README "Testing".
host.check_interpreter()
host.bootstrap_host()
# ComfyUI's own top-level "nodes" module must win over this checkout's nodes/ package (which is only ever
# imported as faithful.nodes); importing it now pins sys.modules["nodes"] to the host's.
import nodes as _host_nodes  # noqa: E402,F401

assert hasattr(_host_nodes, "KSampler"), f"'nodes' resolved to {_host_nodes.__file__}, not ComfyUI's nodes.py"

ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")


@pytest.fixture(scope="session")
def pack():
    return host.load_pack()


@pytest.fixture(scope="session")
def artifacts_dir():
    os.makedirs(ARTIFACTS, exist_ok=True)
    return ARTIFACTS


from tools.host import TINY_CKPT_NAME as CKPT_NAME  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """The generated random SD1.x checkpoint (made once per machine, in the ignored .host/cache folder)."""
    from tools.checkpoint import write_checkpoint
    cache = os.environ.get("FAITHFUL_CACHE", os.path.join(ROOT, ".host", "cache"))
    return write_checkpoint(os.path.join(cache, CKPT_NAME))


@pytest.fixture(scope="session")
def server(tiny_checkpoint, tmp_path_factory):
    """One headless ComfyUI with this pack and the tiny checkpoint, for the whole session."""
    from tools.server import Server, make_base_dir
    base = make_base_dir(str(tmp_path_factory.mktemp("comfy-base")), {CKPT_NAME: tiny_checkpoint})
    srv = Server(base)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "once: host-independent; scripts/test.sh runs it on the first test host only")


def pytest_collection_modifyitems(config, items):
    """On the second and later test hosts (scripts/test.sh sets FAITHFUL_ONCE_DONE=1) the host-independent tests
    (pure math, the parser, the prompt sets, the fresh-clone example run) are deselected: they ran on the first."""
    if os.environ.get("FAITHFUL_ONCE_DONE") != "1":
        return
    dropped = [i for i in items if i.get_closest_marker("once")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if not i.get_closest_marker("once")]
