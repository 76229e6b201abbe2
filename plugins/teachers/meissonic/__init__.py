"""Meissonic text-to-image teacher (Meissonic's Transformer2DModel on diffusers Flux blocks, diffusers VQModel,
transformers CLIP-ViT-H/14) and its pipeline sampler."""
from registry import hookimpl


@hookimpl
def dimo_register(register):
    from plugins.teachers.meissonic.sampler import MeissonicSampler
    from plugins.teachers.meissonic.schedule import CosineClamped
    from plugins.teachers.meissonic.teacher import MeissonicTeacher
    register("teacher", "meissonic", MeissonicTeacher)
    register("sampler", "meissonic", MeissonicSampler)
    register("schedule", "cosine_clamped", CosineClamped)
