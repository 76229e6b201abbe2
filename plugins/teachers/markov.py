"""(being written)"""
from registry import hookimpl


@hookimpl
def dimo_register(register):
    pass
