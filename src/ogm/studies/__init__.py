"""Studies of the appendix of "Safety considerations for online generative modeling" and
the discussion around it, each an agent kind whose ``run(config, run_dir)`` computes its
tables (docs/studies.md):

- ``kl_equivalence``: exp-tilted conditioning against the KL-regularised optimum and the
  per-step factorisation, exactly, on small finite MDPs (``finite_mdp``);
- ``self_training``: the zero expected gradient of a model's own samples, and online loops
  whose returns come from the model instead of the environment;
- ``stitching``: the GM agent against demonstrators each good on one half of a task;
- ``simulator``: conditioning fidelity and entropy of the GM agent, OGM agents and KL-PPO.
"""
