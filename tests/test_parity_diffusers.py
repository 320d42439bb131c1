"""Parity of Excite Tokens with the diffusers Attend-and-Excite pipeline (diffusers 0.42.1, deprecated folder).

Same small random UNet in both (weights mapped with comfy.utils.unet_to_diffusers), same prompt embeddings and
starting latent, DDIM in both (ComfyUI "ddim" + "ddim_uniform" visits diffusers' DDIMScheduler timesteps), CFG
7.5. The paper's schedule over 10 steps: guided while i < 5, refinement at i = 0, 2, 4 (fractions 0, 0.2, 0.4
of the steps), alpha_i = 20 sqrt(linspace(1, 0.5, 10)[i]). At every step the latent the sampler steps from
(after the A&E update) and the x0 prediction must agree; an unguided ComfyUI run must differ clearly.
"""
import math

import pytest
import torch

from tools import reference, tiny

diffusers = pytest.importorskip("diffusers")

STEPS = 10
PROMPT = "a cat and a frog"
INDICES = [2, 5]


def _run_diffusers(pipe, cond, uncond, z_T):
    record = []
    orig_step = pipe.scheduler.step

    def step(model_output, timestep, sample, *a, **k):
        out = orig_step(model_output, timestep, sample, *a, **k)
        record.append((sample.detach().clone(), out.pred_original_sample.detach().clone()))
        return out
    pipe.scheduler.step = step
    pipe(prompt=None, prompt_embeds=cond, negative_prompt_embeds=uncond, token_indices=INDICES, height=128,
         width=128, num_inference_steps=STEPS, guidance_scale=7.5, latents=z_T.clone(), output_type="latent",
         max_iter_to_alter=round(0.5 * STEPS), thresholds={0: 0.05, 2: 0.5, 4: 0.8}, scale_factor=20,
         attn_res=(16, 16))
    return record


def _run_comfy(model, cond, uncond, z_T, guided):
    import comfy.sample
    from faithful.nodes.excite import ExciteTokens
    m = model
    if guided:
        m = ExciteTokens.execute(model, tiny.TokenizerClip(), PROMPT, "", token_indices="2, 5",
                                 attention_factor=1).args[0]
    ms = model.get_model_object("model_sampling")
    import comfy.samplers
    sigmas = comfy.samplers.calculate_sigmas(ms, "ddim_uniform", STEPS)
    s0 = float(sigmas[0])
    noise = z_T * math.sqrt(1 + s0 ** 2) / s0  # ComfyUI starts from noise * sigma_0 in x = z sqrt(1+sigma^2)
    record = []

    def cb(i, denoised, x, total):
        s = float(sigmas[i])
        record.append((x.detach().clone() / math.sqrt(1 + s ** 2), denoised.detach().clone()))
    comfy.sample.sample(m, noise, STEPS, 7.5, "ddim", "ddim_uniform", [[cond, {}]], [[uncond, {}]],
                        torch.zeros_like(z_T), callback=cb, disable_pbar=True, seed=0)
    return record, m


def test_guided_latents_match_diffusers_attend_and_excite(pack):
    dunet = reference.diffusers_unet("tiny", 0)
    model = reference.comfy_model(dunet, "tiny")
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(1, 77, 64, generator=g)
    uncond = torch.randn(1, 77, 64, generator=g)
    z_T = torch.randn(1, 4, 16, 16, generator=g)
    ref = _run_diffusers(reference.attend_and_excite_pipeline(dunet), cond, uncond, z_T)
    ours, m = _run_comfy(model, cond, uncond, z_T, guided=True)
    plain, _ = _run_comfy(model, cond, uncond, z_T, guided=False)
    assert len(ref) == len(ours) == STEPS
    from faithful.nodes.runtime import REGISTRY_KEY
    report = m.model_options["transformer_options"][REGISTRY_KEY].last_report
    assert [r["step"] for r in report] == list(range(5))
    assert sum(r["refinement_iterations"] for r in report) > 0, report  # refinement is exercised too
    worst = 0.0
    for i, ((zr, x0r), (zo, x0o), (zp, _)) in enumerate(zip(ref, ours, plain)):
        scale = zr.abs().max().item()
        err = (zr - zo).abs().max().item() / scale
        err0 = (x0r - x0o).abs().max().item() / max(1e-6, x0r.abs().max().item())
        worst = max(worst, err, err0)
        assert err < 1e-4 and err0 < 1e-4, f"step {i}: latent rel err {err:.2e}, x0 rel err {err0:.2e}"
    # The guidance is visible: the unguided run differs from the guided one far beyond the tolerance.
    diff = max((zo - zp).abs().max().item() / zo.abs().max().item() for (zo, _), (zp, _) in zip(ours, plain))
    print(f"worst relative error vs diffusers {worst:.2e}; guided vs unguided {diff:.2e}")
    assert diff > 50 * max(worst, 1e-5)
