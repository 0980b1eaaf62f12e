"""hfgrow: grow Hugging Face causal language models, keep pre-training them, publish them.

Example:
    >>> import hfgrow
    >>> hfgrow.inspect("./small")["num_layers"]
    6
    >>> hfgrow.stack("./small", "./big", factor=4).out
    PosixPath('/abs/big')
    >>> hfgrow.grow("./small", "./wide", hidden_size=4096).plan.recipe["function_preserving"]
    True
    >>> hfgrow.verify("./small", "./wide").preserved
    True
"""

from hfgrow.errors import HfgrowError
from hfgrow.grow import GrowResult, grow, replay, stack
from hfgrow.inspect import inspect
from hfgrow.verify import VerifyResult, verify

__all__ = ["HfgrowError", "GrowResult", "VerifyResult", "grow", "inspect", "replay", "stack", "verify"]
