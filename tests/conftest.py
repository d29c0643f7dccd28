"""Test-wide settings.

One torch thread: the tests' models are tiny, for which one thread is as fast as two and
far faster on a busy 2-core machine; it also keeps float reductions, and so the numbers
the tests compare, independent of the machine's core count.
"""

import torch

torch.set_num_threads(1)
