"""Speed and memory of every Faithful method against the plain sampler, on the same model, seed and steps, in
one run; and our Attend-and-Excite overhead against the diffusers reference pipeline on the same weights.

    python -m tools.benchmark --size small           # seconds: a small 3-level UNet
    python -m tools.benchmark --size sd15 --steps 20 --latent 16 --json bench.json   # full-size SD1.5 UNet

Overhead = (method time - plain time) / plain time, each framework against its own plain run. Guided-step
ratios use per-step wall times from the sampler callback: guided steps without refinement vs plain steps
(for Layout Regions alone, which has no loss: its modulated steps, the first 30%).
Peak memory: process RSS above the level before the run (sampled every 10 ms), and CUDA peak when present. On
CPU the heap policy guidance sets (nodes/allocator.py) is set first, so plain and guided runs share it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PROMPT = "a red cat to the left of a blue frog"


class PeakRSS:
    """Peak resident memory above the starting level, sampled in a thread."""

    def __enter__(self):
        import psutil
        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self.stop = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        import torch
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.stop = True
        self.t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.mib = (self.peak - self.base) / 2 ** 20
        import torch
        self.cuda_mib = torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else None


def _methods(clip, factor):
    """name -> function(model) -> patched model. Each uses the papers' defaults (A&E with refinement)."""
    from faithful.nodes.bindings import BindAttributes, ParsePromptBindings
    from faithful.nodes.excite import ExciteTokens
    from faithful.nodes.layout import modulated_model
    from faithful.nodes.spatial import SpatialAlignmentLoss

    def excite(m):
        return ExciteTokens.execute(m, clip, PROMPT, "cat, frog", attention_factor=factor).args[0]

    def syngen(m):
        b = ParsePromptBindings.execute(clip, PROMPT).args[0]
        return BindAttributes.execute(m, b, attention_factor=factor).args[0]

    def spatial(m):
        return SpatialAlignmentLoss.execute(m, clip, PROMPT, "cat left of frog").args[0]

    def layout(m):
        boxes = {"width": 512, "height": 512, "regions": [{"x": 0, "y": 0, "w": 0.5, "h": 1, "phrase": "red cat"},
                                                          {"x": 0.5, "y": 0, "w": 0.5, "h": 1, "phrase": "blue frog"}]}
        return modulated_model(m, clip, PROMPT, json.dumps(boxes))[0]

    def combined(m):
        return spatial(syngen(excite(m)))
    return {"excite": excite, "syngen": syngen, "spatial": spatial, "layout": layout, "all_three": combined,
            "all_four": lambda m: layout(combined(m))}


def _sample(model, cond, uncond, latent, steps, seed=0):
    import comfy.sample
    import torch
    times = []

    def cb(i, *_):
        times.append(time.perf_counter())
    noise = comfy.sample.prepare_noise(latent, seed)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        with torch.inference_mode():
            comfy.sample.sample(model, noise, steps, 7.5, "ddim", "ddim_uniform", [[cond, {}]], [[uncond, {}]], latent,
                                seed=seed, disable_pbar=True, callback=cb)
        total = time.perf_counter() - t0
    step_times = [b - a for a, b in zip([t0] + times[:-1], times)]
    return total, step_times, mem


def _registry_report(model):
    from faithful.nodes.runtime import REGISTRY_KEY
    return model.model_options["transformer_options"][REGISTRY_KEY].last_report


def run(size="small", steps=20, latent=16, reference=True, methods=None, repeat=1):
    from tools.host import load_pack
    load_pack()
    import torch
    from faithful.nodes.allocator import pin_mmap_threshold
    # The heap policy guidance sets on CPU (nodes/allocator.py), set before anything is measured so that the plain
    # sampler runs under it too; FAITHFUL_KEEP_MALLOC=1 (--keep-malloc) measures glibc's default policy instead.
    heap = "glibc mmap threshold pinned at 128 KiB" if pin_mmap_threshold(torch.device("cpu")) else "default"
    from tools import reference as ref
    from tools import tiny
    torch.manual_seed(0)
    dunet = ref.diffusers_unet(size, 0)
    model = ref.comfy_model(dunet, size)
    factor = ref.CONFIGS[size]["factor"]
    dim = ref.context_dim(size)
    g = torch.Generator().manual_seed(1)
    cond, uncond = torch.randn(1, 77, dim, generator=g), torch.randn(1, 77, dim, generator=g)
    lat = torch.zeros(1, 4, latent, latent)
    clip = tiny.TokenizerClip()
    table = {}
    _sample(model, cond, uncond, lat, 2)  # warm-up
    best = lambda runs: min(runs, key=lambda r: r[0])
    plain_total, plain_steps, plain_mem = best([_sample(model, cond, uncond, lat, steps) for _ in range(repeat)])
    plain_step = sum(plain_steps) / len(plain_steps)
    table["plain"] = dict(total_s=plain_total, step_s=plain_step, peak_rss_mib=plain_mem.mib, cuda_mib=plain_mem.cuda_mib)
    for name, fn in _methods(clip, factor).items():
        if methods and name not in methods:
            continue
        m = fn(model)
        total, st, mem = best([_sample(m, cond, uncond, lat, steps) for _ in range(repeat)])
        rep = _registry_report(m)
        guided = [r["step"] for r in rep if not r["refinement_iterations"]]
        if not rep:  # layout alone: no loss; its modulated steps are the first 30% (the paper's 15 of 50)
            guided = list(range(round(0.3 * steps)))
        guided_step = sum(st[i] for i in guided) / max(1, len(guided))
        table[name] = dict(total_s=total, ratio_total=total / plain_total, overhead=(total - plain_total) / plain_total,
                           guided_step_s=guided_step, ratio_guided_step=guided_step / plain_step,
                           guided_steps=len(rep), refinement_iterations=sum(r["refinement_iterations"] for r in rep),
                           backward_per_guided_step=max((r["backward_passes"] for r in rep if not r["refinement_iterations"]),
                                                        default=None),
                           peak_rss_mib=mem.mib, ratio_peak_rss=mem.mib / max(1e-6, plain_mem.mib), cuda_mib=mem.cuda_mib)
    if "excite" in table and (not methods or "excite" in methods):
        # The early stop (forward ends after the last layer a loss reads), measured by turning it off.
        m = _methods(clip, factor)["excite"](model)
        from faithful.nodes.runtime import REGISTRY_KEY
        m.model_options["transformer_options"][REGISTRY_KEY].early_stop = False
        total, st, mem = best([_sample(m, cond, uncond, lat, steps) for _ in range(repeat)])
        rep = _registry_report(m)
        guided = [r["step"] for r in rep if not r["refinement_iterations"]]
        gs = sum(st[i] for i in guided) / max(1, len(guided))
        table["excite_no_early_stop"] = dict(total_s=total, ratio_total=total / plain_total,
                                             overhead=(total - plain_total) / plain_total, guided_step_s=gs,
                                             ratio_guided_step=gs / plain_step, peak_rss_mib=mem.mib,
                                             ratio_peak_rss=mem.mib / max(1e-6, plain_mem.mib), cuda_mib=mem.cuda_mib)
    if "all_three" in table:
        heaviest = max(("excite", "syngen", "spatial"), key=lambda k: table.get(k, {}).get("guided_step_s", 0))
        table["all_three"]["ratio_guided_step_vs_heaviest"] = table["all_three"]["guided_step_s"] / table[heaviest]["guided_step_s"]
        table["all_three"]["heaviest_alone"] = heaviest
    result = {"machine": dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                              cpus=os.cpu_count(), torch=torch.__version__, threads=torch.get_num_threads(),
                              cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None),
              "settings": dict(size=size, steps=steps, latent=latent, sampler="ddim/ddim_uniform", cfg=7.5,
                               attention_factor=factor, repeat=repeat, cpu_heap=heap),
              "comfyui": table}
    if reference and (not methods or "excite" in methods):
        from faithful.nodes.tokens import PromptTokens
        indices = [p for g in PromptTokens(clip, PROMPT).locate(["cat", "frog"]) for p in g]  # the same tokens
        result["diffusers_reference"] = _reference(dunet, size, cond, uncond, latent, steps, factor, table, indices)
    return result


def _reference(dunet, size, cond, uncond, latent, steps, factor, table, indices):
    """diffusers' plain pipeline vs its Attend-and-Excite pipeline on the same UNet, same schedule."""
    import torch
    from tools import reference as ref
    import comfy.sample
    # the same starting latent as the ComfyUI runs (noise of seed 0, in diffusers' unit-variance convention)
    z = comfy.sample.prepare_noise(torch.zeros(1, 4, latent, latent), 0)
    res = latent // factor
    common = dict(prompt_embeds=cond, negative_prompt_embeds=uncond, height=latent * 8, width=latent * 8,
                  num_inference_steps=steps, guidance_scale=7.5, output_type="latent")
    plain = ref.plain_pipeline(dunet, size)
    plain.set_progress_bar_config(disable=True)
    ae = ref.attend_and_excite_pipeline(dunet, size)
    ae.set_progress_bar_config(disable=True)
    with PeakRSS():
        t0 = time.perf_counter()
        plain(latents=z.clone(), **common)
        t_plain = time.perf_counter() - t0
    n = len(plain.scheduler.timesteps)
    thresholds = {round(f * n): t for f, t in {0.0: 0.05, 0.2: 0.5, 0.4: 0.8}.items()}
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        ae(prompt=None, token_indices=indices, latents=z.clone(), max_iter_to_alter=round(0.5 * n),
           thresholds=thresholds, scale_factor=20, attn_res=(res, res), **common)
        t_ae = time.perf_counter() - t0
    over_ref = (t_ae - t_plain) / t_plain
    ours = table.get("excite", {}).get("overhead")
    return dict(plain_s=t_plain, attend_and_excite_s=t_ae, overhead=over_ref, peak_rss_mib=mem.mib, token_indices=indices,
                ours_overhead=ours, ours_over_reference=(ours / over_ref) if ours is not None and over_ref > 0 else None)


def print_table(r):
    print(f"machine: {r['machine']}")
    print(f"settings: {r['settings']}")
    print(f"{'method':<21} {'total s':>8} {'x plain':>8} {'step s':>8} {'step x':>7} {'peak MiB':>9} {'mem x':>6} {'bwd/step':>8}")
    for name, row in r["comfyui"].items():
        print(f"{name:<21} {row['total_s']:8.2f} {row.get('ratio_total', 1):8.2f} "
              f"{row.get('guided_step_s', row.get('step_s')):8.3f} {row.get('ratio_guided_step', 1):7.2f} "
              f"{row['peak_rss_mib']:9.0f} {row.get('ratio_peak_rss', 1):6.2f} {row.get('backward_per_guided_step', '-')!s:>8}")
    if "all_three" in r["comfyui"]:
        a = r["comfyui"]["all_three"]
        print(f"all three chained: guided step = {a['ratio_guided_step_vs_heaviest']:.2f} x {a['heaviest_alone']} alone")
    d = r.get("diffusers_reference")
    if d:
        print(f"diffusers reference: plain {d['plain_s']:.2f}s, A&E {d['attend_and_excite_s']:.2f}s, overhead "
              f"{d['overhead']:.2f}; ours {d['ours_overhead']:.2f} -> ours / reference = {d['ours_over_reference']:.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["small", "sd15"], default="small")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--latent", type=int, default=16, help="latent side (image side / 8)")
    ap.add_argument("--methods", default="", help="comma-separated subset of excite,syngen,spatial,layout,all_three,all_four")
    ap.add_argument("--no-reference", action="store_true", help="skip the diffusers reference timings")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs per method")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    ap.add_argument("--keep-malloc", action="store_true",
                    help="leave glibc's dynamic mmap threshold alone (what FAITHFUL_KEEP_MALLOC=1 does in ComfyUI)")
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args(argv)
    if a.keep_malloc:
        os.environ["FAITHFUL_KEEP_MALLOC"] = "1"
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    r = run(a.size, a.steps, a.latent, not a.no_reference, [m for m in a.methods.split(",") if m], a.repeat)
    print_table(r)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return r


if __name__ == "__main__":
    main()
