"""Guidance runs at the FIRST model evaluation of each sampler step, and its latent update lands in the state the
sampler continues from, for every sampler of the host (nodes/steps.py).

Ground truth, read from comfy/k_diffusion/sampling.py and comfy/extra_samplers/uni_pc.py (0.3.75 and 0.33.0):
every sampler calls its callback for step i right after step i's first evaluation (k-diffusion) or after all of
step i (UniPC, one evaluation per step), so the first evaluation of step i is the last model call before
callback(i). The timeline below records every model call (a PREDICT_NOISE wrapper put on the model before
Faithful's, so outside it) and every callback; a call is "guided" when the run's engine produced a result during it.
"""
import functools

import pytest
import torch

import comfy.samplers
from tools import tiny

REJECTED = ("dpm_fast", "dpm_adaptive")
SAMPLERS = [n for n in comfy.samplers.SAMPLER_NAMES if n not in REJECTED]
# ComfyUI's ipndm, ipndm_v and deis hand their callback the x they were started with, not the loop variable
# (the model gets the loop variable x_cur, which the update moves; see sampling.py).
CALLBACK_REPORTS_INPUT_X = {"ipndm", "ipndm_v", "deis"}
VP_STATE = {"uni_pc", "uni_pc_bh2"}  # UniPC keeps x / sqrt(1 + sigma^2); the model gets a rescaled temporary
STEPS = 4
SIZE = 16


@pytest.fixture(scope="module")
def sd1(pack):
    return tiny.build_model("sd1", seed=2), tiny.random_cond(seed=1), tiny.random_cond(seed=2)


def _results(model_options):
    """The guidance results of the current run so far (where the engine keeps them)."""
    from faithful.nodes.runtime import RUN_KEY
    run = model_options.get("transformer_options", {}).get(RUN_KEY)
    if run is None or run.engine is None:
        return []
    return run.engine.history


def _timeline_model(model, events):
    """A clone whose PREDICT_NOISE wrapper (outside Faithful's, added first) records each model call."""
    import comfy.patcher_extension as pe

    def wrapper(executor, x, timestep, model_options={}, seed=None, *args, **kwargs):
        hist = _results(model_options)
        n = len(hist)
        before = x.clone()
        out = executor(x, timestep, model_options, seed, *args, **kwargs)
        events.append(dict(kind="call", sigma=float(timestep.flatten()[0]), x=x, before=before, out=out.clone(),
                           guided=list(hist[n:])))
        return out

    m = model.clone()
    m.add_wrapper_with_key(pe.WrappersMP.PREDICT_NOISE, "test.timeline", wrapper)
    return m


def _excite(model, **kw):
    from faithful.nodes.excite import ExciteTokens
    kw.setdefault("attention_factor", 2)
    kw.setdefault("iterative_refinement", False)
    return ExciteTokens.execute(model, tiny.TokenizerClip(), "a cat and a frog", "cat, frog", **kw).args[0]


def _sigmas(model, name, steps=STEPS):
    import comfy.model_management as mm
    return comfy.samplers.KSampler(model, steps, mm.get_torch_device(), sampler=name, scheduler="normal").sigmas


def _run(model, sampler, sigmas, pos, neg, events, seed=3):
    import comfy.sample
    lat = torch.zeros(1, 4, SIZE, SIZE)
    noise = comfy.sample.prepare_noise(lat, seed)

    def cb(i, denoised, x, total):
        last = [e for e in events if e["kind"] == "call"][-1]
        events.append(dict(kind="cb", i=i, x=x, value=x.clone(), denoised=denoised.clone(),
                           call_x_now=last["x"].clone()))
    return comfy.sample.sample_custom(model, noise, 5.0, sampler, sigmas, pos, neg, lat, callback=cb,
                                      disable_pbar=True, seed=seed)


def _check_first_evaluations(events, n_steps):
    """Guided calls are exactly the last call before callback(i) of each guided step i; returns {i: (call, cb)}."""
    cbs = [k for k, e in enumerate(events) if e["kind"] == "cb"]
    assert [events[k]["i"] for k in cbs] == list(range(n_steps))
    guided = {}
    for k, e in enumerate(events):
        if e["kind"] == "call" and e["guided"]:
            assert len(e["guided"]) == 1, "one model call guided twice"
            step = e["guided"][0].step
            assert step not in guided, f"step {step} guided at two calls"
            guided[step] = k
    assert guided and sorted(guided) == list(range(len(guided))), sorted(guided)
    out = {}
    for i, k in guided.items():
        first = cbs[i] - 1  # the last event before callback(i) ...
        assert events[first]["kind"] == "call" and k == first, (
            f"step {i} was guided at call #{k} (sigma {events[k]['sigma']:.4f}), not at its first evaluation "
            f"#{first} (sigma {events[first]['sigma']:.4f})")
        out[i] = (events[k], events[cbs[i]])
    return out


@pytest.mark.parametrize("name", SAMPLERS)
def test_guided_at_first_evaluation_and_state_moves(sd1, name):
    model, pos, neg = sd1
    events = []
    m = _excite(_timeline_model(model, events))
    sigmas = _sigmas(model, name)
    out = _run(m, comfy.samplers.sampler_object(name), sigmas, pos, neg, events)
    assert torch.isfinite(out).all()
    n = len(sigmas) - 1
    pairs = _check_first_evaluations(events, n)
    assert len(pairs) == n // 2  # Excite Tokens' default: the first half of the steps
    for i, (call, cb) in pairs.items():
        res = call["guided"][0]
        assert abs(call["sigma"] - float(sigmas[i])) <= 1e-4 * max(1.0, float(sigmas[i]))
        assert res.delta_x is not None and res.delta_x.abs().max() > 0
        d = res.delta_x.to(call["before"].dtype)
        # the denoised the sampler uses is the model's output at the moved latent (UniPC: not shifted by -delta)
        assert torch.allclose(cb["denoised"], call["out"], atol=1e-5, rtol=1e-5), name
        if name in VP_STATE:
            assert torch.equal(cb["call_x_now"], call["before"]), "UniPC's rescaled temporary was moved"
            if i == 0:  # UniPC's state at step 0 is noise / sqrt(1 + sigma_0^2), untouched until callback(0)
                a = (1 + float(sigmas[0]) ** 2) ** -0.5
                assert torch.allclose(cb["value"], (call["before"] + d) * a, atol=1e-5, rtol=1e-4)
            continue
        # the tensor the model was called with moved by delta, in place ...
        assert torch.allclose(cb["call_x_now"], call["before"] + d, atol=1e-6, rtol=1e-5), name
        # ... and it is the sampler's own x (the one its callback reports)
        if name not in CALLBACK_REPORTS_INPUT_X:
            assert cb["x"] is call["x"], f"{name}: the update moved a temporary, not the sampler's x"
            assert torch.equal(cb["value"], cb["call_x_now"])


CUSTOM = [  # (sampler function, KSAMPLER extra_options, model calls of the 4 steps)
    ("sample_seeds_2", {"eta": 0.0, "s_noise": 0.0, "r": 1.0}, 7),  # SamplerSEEDS2, r = 1: a corrector at sigma_{i+1}
    ("sample_dpmpp_2s_ancestral", {"eta": 0.5, "s_noise": 1.0}, 7),  # midpoint off sigma_{i+1}
    ("sample_dpm_2_ancestral", {"eta": 5.0, "s_noise": 1.0}, 4),     # sigma_down = 0: Euler steps, no midpoint
]


@pytest.mark.parametrize("fn,options,n_calls", CUSTOM, ids=[c[0] + "-" + str(c[1]) for c in CUSTOM])
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_custom_sampler_options(sd1, fn, options, n_calls):
    """The same sampler functions with the options that SamplerCustom's nodes expose (r, eta)."""
    import comfy.k_diffusion.sampling as kds
    model, pos, neg = sd1
    events = []
    m = _excite(_timeline_model(model, events))
    sigmas = _sigmas(model, "euler")
    _run(m, comfy.samplers.KSAMPLER(getattr(kds, fn), options), sigmas, pos, neg, events)
    assert sum(e["kind"] == "call" for e in events) == n_calls
    assert len(_check_first_evaluations(events, len(sigmas) - 1)) == 2


@pytest.mark.parametrize("name", REJECTED)
def test_samplers_off_the_schedule_are_a_clear_error(sd1, name):
    model, pos, neg = sd1
    events = []
    m = _excite(_timeline_model(model, events))
    with pytest.raises(ValueError, match=f"cannot guide the '{name}' sampler") as e:
        _run(m, comfy.samplers.sampler_object(name), _sigmas(model, name), pos, neg, events)
    assert "euler" in str(e.value) and "heun" in str(e.value)
    assert not events, "the error must come before any model evaluation"


def test_a_step_with_no_evaluation_at_its_sigma_is_a_clear_error(sd1):
    """Euler with churn evaluates at sigma_hat = sigma_i (1 + gamma): no call is at step 0's sigma."""
    import comfy.k_diffusion.sampling as kds
    model, pos, neg = sd1
    events = []
    m = _excite(_timeline_model(model, events))
    sampler = comfy.samplers.KSAMPLER(functools.partial(kds.sample_euler, s_churn=1.0))
    with pytest.raises(ValueError, match="no model evaluation at sigma .* for step 0 of the 'sample_euler' sampler"):
        _run(m, sampler, _sigmas(model, "euler"), pos, neg, events)
    assert sum(e["kind"] == "call" for e in events) == 1  # it stops at the first callback


def test_unguided_model_runs_every_sampler_untouched(sd1):
    """The timeline wrapper itself changes nothing: a plain run with it equals one without it."""
    import comfy.sample
    model, pos, neg = sd1
    lat = torch.zeros(1, 4, SIZE, SIZE)
    noise = comfy.sample.prepare_noise(lat, 1)
    sig = _sigmas(model, "heun")
    a = comfy.sample.sample_custom(model, noise, 5.0, comfy.samplers.sampler_object("heun"), sig, pos, neg, lat,
                                   disable_pbar=True, seed=1)
    b = comfy.sample.sample_custom(_timeline_model(model, []), noise, 5.0, comfy.samplers.sampler_object("heun"),
                                   sig, pos, neg, lat, disable_pbar=True, seed=1)
    assert torch.equal(a, b)
