#!/usr/bin/env python
"""(Continued) pre-training: ``accelerate launch -m hfgrow.continue --model M --data D --output-dir RUN ...``.

Installed, that is the form to use (or ``hfgrow train ...``, which checks the machine first); in a clone,
``accelerate launch hfgrow/continue.py ...`` works too. The loop itself is :mod:`hfgrow.train.loop`;
``--help`` lists every option.
"""

import os
import sys

if __package__ in (None, ""):  # run as a file: make the package importable, not the folder it sits in
    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == _here:
        sys.path.pop(0)  # hfgrow/ itself must not shadow top-level modules (io, eval, ...)
    sys.path.insert(0, os.path.dirname(_here))

from hfgrow.train.loop import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
