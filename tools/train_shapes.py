"""Train the shapes model: one resumable, seeded command with a progress bar.

    python -m tools.train_shapes --out .host/shapes_run [--steps N] [--batch B] [--threads 2]

Objective (DDPM, Ho et al. 2020, eps prediction on SD's discrete schedule): x_t = sqrt(abar_t) x_0 +
sqrt(1 - abar_t) eps, t ~ U{0..999}, loss = || eps - eps_theta(x_t, t, c) ||^2, with abar from ComfyUI's own
ModelSamplingDiscrete (scaled-linear betas 0.00085-0.012), so the sampler inverts exactly this process. x_0: world
images (4, 32, 32); c: the text encoder's (B, 77, 64) output for the caption, "" for 10% of the batch (classifier-
free guidance). The UNet and the text encoder train jointly (AdamW, linear warm-up, then constant); an EMA of both
is what gets exported. From step --lowfreq-from (1114) on, a second term weights the x0-space error of the
eps estimate's 4x4-block means, min(sigma_t^2, 100) |avgpool4(eps_theta - eps)|^2: without it the model's
small bias at high noise (eps slope 0.995 at t = 999, i.e. x0 off by 0.75 in green) became a colour cast
that no later step removed, and samples were noise-textured.

Reproducible: the batch of step k is drawn from numpy/torch generators seeded by (seed, k), so a resumed run
sees exactly the data an uninterrupted run sees. A checkpoint (model, EMA, optimiser, step) is written every
--ckpt-minutes; rerunning the same command resumes from it. At the end the EMA weights are exported as fp16
safetensors (--export) and their sha256 printed.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _ema_update(ema: dict, model_params: dict, decay: float):
    with torch.no_grad():
        for k, p in model_params.items():
            ema[k].mul_(decay).add_(p.detach(), alpha=1 - decay)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, ".host", "shapes_run"))
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--decay-from", type=int, default=None,
                    help="from this step on the learning rate follows a cosine from --lr down to --lr-end at --steps "
                         "(default: constant after warm-up)")
    ap.add_argument("--lr-end", type=float, default=0.05, help="final learning rate, as a fraction of --lr")
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt-minutes", type=float, default=3.0)
    ap.add_argument("--export", default=None, help="fp16 safetensors written at the end (default: OUT/shapes.safetensors)")
    ap.add_argument("--lowfreq-from", type=int, default=1114,
                    help="step from which the low-frequency x0 term is added (the committed run: 1114)")
    ap.add_argument("--lowfreq-cap", type=float, default=100.0)
    ap.add_argument("--bench", type=int, default=0, help="only time this many steps and exit")
    ap.add_argument("--export-only", action="store_true", help="export the checkpoint's EMA weights and exit")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from tools import host
    host.bootstrap_host()
    from tqdm import tqdm
    from faithful_eval.shapes import world
    from tools import shapes_model as SM

    torch.manual_seed(a.seed)
    base = SM.build_unet(seed=a.seed)
    unet = base.diffusion_model
    text = SM.build_text_encoder(seed=a.seed + 1)
    unet.train()
    text.train()
    params = {"unet." + k: p for k, p in unet.named_parameters()}
    params.update({"text." + k: p for k, p in text.transformer.named_parameters()})
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(list(params.values()), lr=a.lr, weight_decay=0.0, betas=(0.9, 0.99))
    ema = {k: p.detach().clone() for k, p in params.items()}
    sig = base.model_sampling.sigmas.float()
    acp = (1.0 / (1.0 + base.model_sampling.sigmas.double() ** 2)).float()  # abar_t = 1 / (1 + sigma_t^2)
    assert acp.shape[0] == 1000
    tok = SM.tokenizer()
    cache = {}

    def ids(c):
        if c not in cache:
            cache[c] = SM.token_ids(tok, c)
        return cache[c]

    os.makedirs(a.out, exist_ok=True)
    ck = os.path.join(a.out, "checkpoint.pt")
    step = 0
    if os.path.isfile(ck) and not a.bench:
        st = torch.load(ck, map_location="cpu")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(st["params"][k])
                ema[k].copy_(st["ema"][k])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        print(f"resumed from {ck} at step {step}", flush=True)

    def save():
        tmp = ck + ".tmp"
        torch.save({"params": {k: p.detach() for k, p in params.items()}, "ema": ema, "opt": opt.state_dict(),
                    "step": step, "args": vars(a)}, tmp)
        os.replace(tmp, ck)

    total = a.bench or a.steps
    if a.export_only:
        step = total
    last_ck = time.time()
    bar = tqdm(total=total, initial=step if not a.bench else 0, desc="train shapes", dynamic_ncols=True)
    t0 = time.time()
    losses = []
    while step < total:
        rng = np.random.default_rng([a.seed, step])
        g = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        imgs, caps, _ = world.batch(rng, a.batch, p_empty=0.1)
        x0 = torch.from_numpy(imgs)
        t = torch.randint(0, 1000, (a.batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        ab = acp[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        lr = a.lr * min(1.0, (step + 1) / a.warmup)  # constant after warm-up: any checkpoint's EMA is usable
        if a.decay_from is not None and step >= a.decay_from and total > a.decay_from:
            frac = (step - a.decay_from) / (total - a.decay_from)  # cosine: a resumed run follows the same curve
            lr = a.lr * (a.lr_end + (1 - a.lr_end) * 0.5 * (1 + math.cos(math.pi * frac)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        ctx = SM.text_forward(text, [ids(c) for c in caps])
        pred = unet(xt, timesteps=t.float(), context=ctx)
        loss = torch.nn.functional.mse_loss(pred, eps)
        if step >= a.lowfreq_from:
            # x0-space error of the coarse (4x4-block) component: x0_hat - x0 = -sigma (eps_hat - eps); at high
            # sigma a small bias of eps_hat's local means becomes a colour cast the sampler never removes
            w = sig[t].clamp(max=a.lowfreq_cap ** 0.5).pow(2).view(-1, 1, 1, 1)
            loss = loss + (w * torch.nn.functional.avg_pool2d(pred - eps, 4).pow(2)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        _ema_update(ema, params, min(a.ema, (1 + step) / (10 + step)))
        step += 1
        losses.append(float(loss))
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}", lr=f"{lr:.1e}")
        if not a.bench and (time.time() - last_ck > a.ckpt_minutes * 60 or step == total):
            save()
            last_ck = time.time()
    bar.close()
    if a.bench:
        dt = (time.time() - t0) / a.bench
        print(f"{dt:.3f} s/step at batch {a.batch} ({sum(p.numel() for p in params.values())} parameters)")
        return
    # export the EMA weights
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(ema[k])
    path = a.export or os.path.join(a.out, "shapes.safetensors")
    digest = SM.export(unet, text, path)
    print(f"wrote {path}\nsha256 {digest}", flush=True)


if __name__ == "__main__":
    main()
