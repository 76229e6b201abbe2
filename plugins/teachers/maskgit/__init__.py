"""MaskGIT teachers on ImageNet: ``teacher=maskgit`` (MaskGIT-pytorch with the taming VQGAN, the Di[M]O
paper's teacher) and ``teacher=halton_maskgit`` (Halton-MaskGIT with LlamaGen's VQ); networks that load
the official checkpoints strictly, and ImageNet-style evaluation (``evaluation.py``)."""
from registry import hookimpl


@hookimpl
def dimo_register(register):
    from plugins.teachers.maskgit.teacher import HaltonTeacher, MaskGitTeacher
    register("teacher", "maskgit", MaskGitTeacher)
    register("teacher", "halton_maskgit", HaltonTeacher)
