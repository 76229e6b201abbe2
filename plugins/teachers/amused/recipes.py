"""Recipes of the aMUSEd teacher (teacher x method), as data.

aMUSEd has no official Di[M]O run. It shares Meissonic's token space and CFG semantics (UVit2D embedding,
[M] = vocab_size - 1, ``u + w (c - u)``, AmusedScheduler), so the Di[M]O recipe is the official Di[M]O
*Meissonic* configuration (yuanzhi-zhu/DiMO configs/DIMO_Meissonic.yaml + launch script, see
reference/dimo_official_code.md): lr 1e-6 for both networks, 100 warm-up steps, Adam eps 1e-6, FKL, r_init 0.5,
embedding noise 0.3, teacher CFG 4.0 against the null/negative prompt, cosine schedules for x_t and the aux
update, sum reduction, label smoothing 0.1, EMA 0.9999, batch 2 x 8 accumulation = 16, the reported checkpoint
at 13k steps. The teacher rows sample with the official AmusedPipeline sampler (12 steps, guidance 10).

Soft-Di[M]O (paper App. H, no official code) starts from the Di[M]O student (``method.init_from``) and adds
reward losses on the soft decoded images; the GAN head needs real (tokens, prompt) pairs, which a prompt set
alone does not provide, so w_gan is 0 unless a user supplies data. The paper's text-to-image rewards are
HPS v2.1 and CLIP; their weights here are the paper's lambda_i = 1 (not stated per reward).
"""
from __future__ import annotations

DIMO_RECIPE = {
    "trainer": {"batch_size": 16, "steps": 13_000, "checkpoint_every": 1000},
    "method": {"lr_generator": 1e-6, "lr_aux": 1e-6, "warmup_steps": 100, "adam_eps": 1e-6, "grad_clip": 1.0,
               "ema_decay": 0.9999, "cfg_scale": 4.0, "token_norm": "sum", "weight": "none", "aux_sample": "fresh",
               "label_smoothing": 0.1, "mask_count": "exact"},
    "divergence": {"name": "fkl"},
    "init": {"name": "mixed", "r_init": 0.5, "sigma": 0.3, "count": "exact"},
    "schedule": {"name": "cosine"},
    "sampler": {"name": "amused", "cfg_scale": 10.0},
}

SOFT_DIMO_RECIPE = {
    **DIMO_RECIPE,
    "method": {**DIMO_RECIPE["method"], "w_gan": 0.0, "w_reward": 1.0,
               "rewards": [{"name": "hps", "weight": 1.0}, {"name": "clip", "weight": 1.0}]},
}
