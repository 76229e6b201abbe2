"""MaskBit on ImageNet 256: ``teacher=maskbit`` (LFQBert generator, VQGAN+ LFQ tokenizer, factorised 2-group tokens
flattened to one grid of L*G entries) and its official sampler ``sampler=maskbit``."""
from registry import hookimpl


@hookimpl
def dimo_register(register):
    from plugins.teachers.maskbit.sampler import MaskBitSampler
    from plugins.teachers.maskbit.teacher import MaskBitTeacher
    register("teacher", "maskbit", MaskBitTeacher)
    register("sampler", "maskbit", MaskBitSampler)
