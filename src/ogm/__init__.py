"""ogm: a lab for online generative-modeling agents.

Importing ``ogm`` registers the gridworld environments with Gymnasium (``ogm/<Game>-v0``).
"""

from ogm import envs as envs

__version__ = "0.1.0"
