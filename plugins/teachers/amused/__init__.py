"""aMUSEd text-to-image teacher (diffusers UVit2DModel + VQModel, transformers CLIP) and its official sampler."""
from plugins.teachers.amused.sampler import AmusedSampler
from plugins.teachers.amused.teacher import AmusedNetwork, AmusedTeacher
from registry import hookimpl

__all__ = ["AmusedNetwork", "AmusedSampler", "AmusedTeacher"]


@hookimpl
def dimo_register(register):
    register("teacher", "amused", AmusedTeacher)
    register("sampler", "amused", AmusedSampler)
