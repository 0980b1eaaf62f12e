"""hfgrow: grow Hugging Face causal language models, keep pre-training them, publish them.

Example:
    >>> import hfgrow
    >>> hfgrow.inspect("./small")["num_layers"]
    6
    >>> hfgrow.stack("./small", "./big", factor=4).out
    PosixPath('/abs/big')
"""

from hfgrow.errors import HfgrowError
from hfgrow.grow import GrowResult, stack
from hfgrow.inspect import inspect

__all__ = ["HfgrowError", "GrowResult", "inspect", "stack"]
