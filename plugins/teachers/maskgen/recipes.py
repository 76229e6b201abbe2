"""Recipes of the MaskGen teacher (teacher x method), as data.

The paper reports Di[M]O and Soft-Di[M]O on MaskGen-L (Table 3) but its text and the official Di[M]O code
(MaskGit and Meissonic only) give no MaskGen configuration. The text-to-image recipe of the official code is
the Meissonic one (configs/DIMO_Meissonic.yaml + launch script): lr 1e-6 both networks, 100 warm-up steps,
Adam eps 1e-6, FKL, r_init 0.5, embedding noise 0.3, teacher CFG 4.0 against the null prompt, cosine
schedules, sum reduction, label smoothing 0.1, EMA 0.9999, batch 16, 13k steps; it is used here unchanged and
marked as such in docs/teachers/maskgen.md. Teacher rows sample with the official MaskGen sampler (16 steps,
guidance 12 with the cosine ramp, randomize temperature 2.0).
"""
from __future__ import annotations

from plugins.teachers.amused.recipes import DIMO_RECIPE as _T2I

DIMO_RECIPE = {**_T2I, "sampler": {"name": "maskgen"}}
SOFT_DIMO_RECIPE = {
    **DIMO_RECIPE,
    "method": {**_T2I["method"], "w_gan": 0.0, "w_reward": 1.0,
               "rewards": [{"name": "hps", "weight": 1.0}, {"name": "clip", "weight": 1.0}]},
}
