"""The benchmark script runs end to end on the small model (a smoke test; no timing is asserted)."""
from tools import benchmark


def test_benchmark_small_runs_and_reports(pack):
    r = benchmark.run("small", steps=8, latent=16, reference=True, methods=["excite", "spatial"])
    t = r["comfyui"]
    assert set(t) == {"plain", "excite", "spatial", "excite_no_early_stop"}
    for name in ("excite", "spatial"):
        row = t[name]
        assert row["total_s"] > 0 and row["ratio_total"] > 0 and row["guided_steps"] > 0
        assert row["backward_per_guided_step"] == 1
    ref = r["diffusers_reference"]
    assert ref["plain_s"] > 0 and ref["attend_and_excite_s"] > 0 and ref["ours_over_reference"] is not None
    assert r["machine"]["cpus"] >= 1
