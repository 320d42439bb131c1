"""Evaluation tools of the Faithful pack: prompt sets, a batch runner for ComfyUI servers, and scorers.

Pure Python; nothing here imports ComfyUI. ``prompts``, ``graph``, ``jobs`` and ``manifest`` need only the
standard library, ``client`` and ``runner`` need ``requests``, the scorers (``clip_scores``, ``syngen_metric``,
``visor``, ``report``, ``scores``) ``numpy``, ``Pillow`` and (for CLIP) ``torch`` + ``transformers``.

    python -m faithful_eval.prompts dvmp --n 200 --seed 0 --out dvmp.csv
    python -m faithful_eval.runner --workflow wf_api.json --prompts dvmp.csv --seeds 0,1,2 --methods methods.json \
        --servers http://127.0.0.1:8188,http://127.0.0.1:8189 --out results/
    python -m faithful_eval.scores results/ --clip /path/to/clip-vit-base-patch16 --templates
"""
