"""MaskGen-VQ text-to-image teacher over TA-TiTok (bytedance/1d-tokenizer) and its official sampler."""
from plugins.teachers.maskgen.sampler import MaskGenSampler
from plugins.teachers.maskgen.teacher import MaskGenTeacher
from registry import hookimpl


@hookimpl
def dimo_register(register):
    register("teacher", "maskgen", MaskGenTeacher)
    register("sampler", "maskgen", MaskGenSampler)
