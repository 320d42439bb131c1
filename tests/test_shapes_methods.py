"""Each Faithful method changes what the shapes model draws, in the direction of its own metric (in-process,
deterministic on CPU): on a fixed set of prompts x seeds, guided beats plain on the method's target metric and
the guard metric (pictures with stray objects, specks or off-palette pixels) does not get worse by more than
GUARD_MARGIN. Numbers: docs/shapes.md (python -m tools.shapes_bench measures the same at 256 pictures a
setting)."""
import pytest
import torch

pytestmark = pytest.mark.skip(reason="meaningful only once the shapes model draws single objects right >= 90% "
                               "(v1: 36%, see docs/shapes.md); remove this marker once it does")

GUARD_MARGIN = 0.15
N_PROMPTS, BATCH = 8, 4  # 32 pictures per setting

# method -> (prompt kind, strength used here, metric it targets)
CASES = {
    "excite": ("and", None, "presence"),
    "bind": ("and", None, "binding"),
    "spatial": ("relation", None, "relation"),
    "layout": ("and", None, "layout_iou"),
}


@pytest.fixture(scope="module")
def shapes(pack):
    from tools import shapes_model as SM
    torch.manual_seed(0)
    return SM.load()


@pytest.fixture(scope="module")
def plain_rows(shapes):
    from tools import shapes_run as R
    model, clip = shapes
    return {k: R.run(model, clip, R.prompt_set(k, N_PROMPTS, seed=7), "plain", (0,), BATCH) for k in ("and", "relation")}


@pytest.mark.parametrize("method", list(CASES))
def test_method_improves_its_metric_over_plain(method, shapes, plain_rows):
    from tools import shapes_run as R
    model, clip = shapes
    kind, strength, metric = CASES[method]
    rows = R.run(model, clip, R.prompt_set(kind, N_PROMPTS, seed=7), method, (0,), BATCH, strength)
    g, n = R.rate(rows, metric)
    p, _ = R.rate(plain_rows[kind], metric)
    gg, _ = R.rate(rows, "guard_bad")
    pg, _ = R.rate(plain_rows[kind], "guard_bad")
    print(f"{method}: {metric} plain {p:.3f} guided {g:.3f}; guard_bad plain {pg:.3f} guided {gg:.3f} (n={n})")
    assert n == N_PROMPTS * BATCH
    assert g > p
    assert gg <= pg + GUARD_MARGIN
