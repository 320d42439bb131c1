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
sees exactly the data an uninterrupted run sees, on any --device and with any number of --workers (data
processes that draw steps k = w, w + W, ... and hand them over in step order). A checkpoint (model, EMA,
optimiser, step) is written every --ckpt-minutes; rerunning the same command resumes from it. At the end (and
every --export-minutes) the EMA weights are exported as fp16 safetensors (--export) and their sha256 printed.

On a GPU (--device cuda) the run can be sized by time: --minutes M measures the step rate over steps 20-120
(after start-up) and sets --steps from it (printed, and kept in the checkpoint, so the run can be repeated with --steps).
--token-table FILE (written by --write-token-table FILE from ``world.all_captions()`` with the host's SD1
tokenizer) gives every caption's token ids, so the data processes need no tokenizer.
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


class Steps(torch.utils.data.IterableDataset):
    """The training batches of steps start, start + 1, ...: (x_t (B, 4, S, S), t (B,), eps, ids (B, 77)).

    Step k's batch depends only on (seed, k): scenes from numpy's generator [seed, k], t and eps from torch's
    generator seed * 1_000_003 + k; with W DataLoader workers, worker w draws k = start + w, start + w + W, ...
    and the loader's round-robin returns them in step order."""

    def __init__(self, seed: int, start: int, batch: int, acp: torch.Tensor, table: str | None):
        self.seed, self.start, self.batch, self.acp, self.table = seed, start, batch, acp, table
        self._ids, self._tok = None, None

    def ids_of(self, caption: str) -> list:
        if self._ids is None:
            if self.table:
                z = np.load(self.table)
                self._ids = dict(zip(z["captions"].tolist(), z["ids"].tolist()))
            else:
                self._ids = {}
        if caption not in self._ids:
            if self.table:
                raise ValueError(f"caption {caption!r} is not in the token table {self.table}: rewrite it with "
                                 "--write-token-table")
            from tools import shapes_model as SM
            self._tok = self._tok or SM.tokenizer()
            self._ids[caption] = SM.token_ids(self._tok, caption)
        return self._ids[caption]

    def make(self, step: int):
        from faithful_eval.shapes import world
        rng = np.random.default_rng([self.seed, step])
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        imgs, caps, _ = world.batch(rng, self.batch, p_empty=0.1)
        x0 = torch.from_numpy(imgs)
        t = torch.randint(0, 1000, (self.batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        ab = self.acp[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        return xt, t, eps, torch.tensor([self.ids_of(c) for c in caps], dtype=torch.long)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, n = (info.id, info.num_workers) if info else (0, 1)
        if info:
            torch.set_num_threads(1)
        k = self.start + w
        while True:
            yield self.make(k)
            k += n


def write_token_table(path: str) -> None:
    """captions (N,) and their SD1 token ids (N, 77) for every caption the world can write."""
    from faithful_eval.shapes import world
    from tools import shapes_model as SM
    tok = SM.tokenizer()
    caps = world.all_captions() + [""]
    ids = np.asarray([SM.token_ids(tok, c) for c in caps], np.int32)
    np.savez_compressed(path, captions=np.asarray(caps), ids=ids)
    print(f"wrote {path}: {len(caps)} captions", flush=True)


def lr_at(a, step: int, total: int) -> float:
    """Linear warm-up, then constant, or (--decay-from) a cosine to lr * lr_end at ``total``."""
    lr = a.lr * min(1.0, (step + 1) / a.warmup)
    if a.decay_from is not None and step >= a.decay_from and total > a.decay_from:
        frac = (step - a.decay_from) / (total - a.decay_from)  # a resumed run follows the same curve
        lr = a.lr * (a.lr_end + (1 - a.lr_end) * 0.5 * (1 + math.cos(math.pi * frac)))
    return lr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, ".host", "shapes_run"))
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--minutes", type=float, default=None, help="size --steps to this many minutes of training")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--decay-from", type=int, default=None,
                    help="from this step on the learning rate follows a cosine from --lr down to --lr-end at --steps "
                         "(default: constant after warm-up)")
    ap.add_argument("--lr-end", type=float, default=0.05, help="final learning rate, as a fraction of --lr")
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0, help="data processes (0: draw the batches in this one)")
    ap.add_argument("--token-table", default=None, help="npz of every caption's token ids (--write-token-table)")
    ap.add_argument("--write-token-table", default=None, metavar="FILE", help="write the token table and exit")
    ap.add_argument("--ckpt-minutes", type=float, default=3.0)
    ap.add_argument("--export", default=None, help="fp16 safetensors written at the end (default: OUT/shapes.safetensors)")
    ap.add_argument("--export-minutes", type=float, default=0.0, help="also export every this many minutes")
    ap.add_argument("--lowfreq-from", type=int, default=1114,
                    help="step from which the low-frequency x0 term is added (the committed run: 1114)")
    ap.add_argument("--lowfreq-cap", type=float, default=100.0)
    ap.add_argument("--bench", type=int, default=0, help="only time this many steps and exit")
    ap.add_argument("--export-only", action="store_true", help="export the checkpoint's EMA weights and exit")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if a.minutes is not None and (a.decay_from is None or a.decay_from < 120 or a.warmup < 120):
        raise SystemExit("--minutes measures steps 20-120: give --warmup and --decay-from >= 120")

    from tools import host
    host.bootstrap_host(cpu=dev.type == "cpu")
    from tqdm import tqdm
    from tools import shapes_model as SM
    if a.write_token_table:
        return write_token_table(a.write_token_table)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    torch.manual_seed(a.seed)
    base = SM.build_unet(seed=a.seed)
    unet = base.diffusion_model
    text = SM.build_text_encoder(seed=a.seed + 1)
    unet.train()
    text.train()
    acp = (1.0 / (1.0 + base.model_sampling.sigmas.double() ** 2)).float()  # abar_t = 1 / (1 + sigma_t^2)
    assert acp.shape[0] == 1000
    os.makedirs(a.out, exist_ok=True)
    ck = os.path.join(a.out, "checkpoint.pt")
    st = torch.load(ck, map_location="cpu") if os.path.isfile(ck) and not a.bench else None
    step = st["step"] if st else 0
    total = a.bench or (st["args"]["steps"] if st and a.minutes is not None else a.steps)
    sizing = a.minutes is not None and not a.bench and not st  # a resumed run keeps its recorded --steps
    if st:
        print(f"resuming from {ck} at step {step} of {total}", flush=True)
    # the data processes start (fork) before CUDA is initialised here
    loader = iter(torch.utils.data.DataLoader(Steps(a.seed, step, a.batch, acp, a.token_table), batch_size=None,
                                              num_workers=a.workers, pin_memory=dev.type == "cuda",
                                              prefetch_factor=8 if a.workers else None))
    unet.to(dev)
    text.to(dev)
    params = {"unet." + k: p for k, p in unet.named_parameters()}
    params.update({"text." + k: p for k, p in text.transformer.named_parameters()})
    for p in params.values():
        p.requires_grad_(True)
    plist = list(params.values())
    opt = torch.optim.AdamW(plist, lr=a.lr, weight_decay=0.0, betas=(0.9, 0.99), fused=dev.type == "cuda")
    ema = {k: p.detach().clone() for k, p in params.items()}
    elist = list(ema.values())
    sig = base.model_sampling.sigmas.float().to(dev)
    if st:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(st["params"][k])
                ema[k].copy_(st["ema"][k])
        opt.load_state_dict(st["opt"])
        del st

    def save():
        tmp = ck + ".tmp"
        torch.save({"params": {k: p.detach().cpu() for k, p in params.items()},
                    "ema": {k: v.cpu() for k, v in ema.items()}, "opt": opt.state_dict(), "step": step,
                    "args": dict(vars(a), steps=total)}, tmp)
        os.replace(tmp, ck)

    path = a.export or os.path.join(a.out, "shapes.safetensors")

    def export() -> str:
        with torch.no_grad():
            live = [p.detach().clone() for p in plist]
            torch._foreach_copy_(plist, elist)
            tmp = path + ".tmp.safetensors"
            digest = SM.export(unet, text, tmp)
            os.replace(tmp, path)
            torch._foreach_copy_(plist, live)
        return digest

    if a.export_only:
        print(f"wrote {path}\nsha256 {export()}", flush=True)
        return
    last_ck = last_ex = t0 = time.time()
    bar = tqdm(total=total, initial=step if not a.bench else 0, desc="train shapes", dynamic_ncols=True)
    loss_sum, n_sum, shown, first, t20 = torch.zeros((), device=dev), 0, float("nan"), step, None
    while step < total:
        xt, t, eps, ids = (v.to(dev, non_blocking=True) for v in next(loader))
        lr = lr_at(a, step, total)
        for grp in opt.param_groups:
            grp["lr"] = lr
        ctx = SM.text_forward(text, ids)
        pred = unet(xt, timesteps=t.float(), context=ctx)
        loss = torch.nn.functional.mse_loss(pred, eps)
        if step >= a.lowfreq_from:
            # x0-space error of the coarse (4x4-block) component: x0_hat - x0 = -sigma (eps_hat - eps); at high
            # sigma a small bias of eps_hat's local means becomes a colour cast the sampler never removes
            w = sig[t].clamp(max=a.lowfreq_cap ** 0.5).pow(2).view(-1, 1, 1, 1)
            loss = loss + (w * torch.nn.functional.avg_pool2d(pred - eps, 4).pow(2)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plist, 1.0, foreach=True)
        opt.step()
        with torch.no_grad():  # EMA: ema = decay * ema + (1 - decay) * param
            torch._foreach_lerp_(elist, [p.detach() for p in plist], 1 - min(a.ema, (1 + step) / (10 + step)))
            loss_sum += loss.detach()
        n_sum += 1
        step += 1
        bar.update(1)
        if step % 50 == 0:
            shown, loss_sum, n_sum = float(loss_sum) / n_sum, torch.zeros((), device=dev), 0
            bar.set_postfix(loss=f"{shown:.4f}", lr=f"{lr:.1e}")
        if sizing and step - first == 20:
            t20 = time.time()
        if sizing and step - first == 120:  # the rate of steps 20-120 (after start-up) sizes the run
            rate = 100 / (time.time() - t20)
            total = max(step + 1, step + int(rate * (a.minutes * 60 - (time.time() - t0))))
            sizing = False
            bar.total = total
            print(f"\n{rate:.1f} steps/s: --steps {total} fills --minutes {a.minutes:g}", flush=True)
        now = time.time()
        if not a.bench and (now - last_ck > a.ckpt_minutes * 60 or step == total):
            save()
            last_ck = now
        if a.export_minutes and now - last_ex > a.export_minutes * 60 and step < total:
            print(f"\nstep {step} loss {shown:.4f}: exported sha256 {export()}", flush=True)
            last_ex = now
    bar.close()
    if a.bench:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.time() - t0) / a.bench
        print(f"{dt:.4f} s/step at batch {a.batch} on {dev} ({sum(p.numel() for p in plist)} parameters)")
        return
    print(f"wrote {path}\nsha256 {export()}\nsteps {step}, last loss {shown:.4f}", flush=True)


if __name__ == "__main__":
    main()
