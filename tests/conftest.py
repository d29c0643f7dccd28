"""Test-wide settings: one torch thread, so tiny models are not slowed by thread handoffs
on a 2-core machine, and results do not depend on the machine's core count."""

import torch

torch.set_num_threads(1)
