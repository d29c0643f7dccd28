"""Study ``kl_equivalence``: is the exp-tilted GM agent the KL-regularised optimum?

For each small MDP of :mod:`ogm.studies.finite_mdp` (bandits, a chain of depth 4, and
stochastic versions) a Decision Transformer is trained on ``episodes`` trajectories of the
demonstrators' policy pi_0, then, for each ``kappa``, six trajectory distributions are
computed *exactly* (by enumeration, no sampling) and compared:

- ``dt`` (a): the trained DT asked for a return drawn by ``exp_tilted:kappa`` from its own
  return head, then acting on ``target - rewards so far`` (what ``ogm.agents.rollout`` does);
- ``ideal_dt`` (a*): the same with the exact return-conditioned imitation of pi_0, the limit
  of a perfect fit (separates fitting error from what conditioning itself does);
- ``tilted`` (b): ``p0(tau) exp(kappa R) / Z``, the appendix's policy;
- ``kl_optimum`` (c): soft value iteration with the expectation over the dynamics outside
  the log, the maximiser of ``E[R] - KL(pi || pi_0) / kappa`` over policies;
- ``factorised`` (d): ``pi_0(a|s) E_pi_0[exp(kappa G) | s, a]`` with the exact expectation;
- ``factorised_dt`` (d'): the same computed from the DT's own heads, re-tilting its return
  head at every step (:func:`ogm.studies.finite_mdp.per_step_tilt`): the expectation the
  appendix wondered how to estimate, read off the generative model without a reward model.

Reported per distribution: ``E[R]``, ``KL(p || p0)``, the objective ``E[R] - KL / kappa``
and its gap to the optimum (c), the total variation distance to (b), (c), (d) and (a),
and ``off_support``: the probability that the agent is, at some step, asked for a
return-to-go that pi_0 never reaches from that state (a conditioning the data cannot
answer; the DT then extrapolates, the ideal DT falls back to pi_0).

**kappa's unit.** ``exp_tilted:kappa`` weighs a return R by ``exp(kappa x(R))`` with
``x(R) = (R - lo) / (hi - lo)``, in units of the observed return range (see
``ogm.agents.conditioning``). The exact solvers take kappa in raw return units, so the
study converts: ``kappa_raw = kappa / (hi - lo)``, with ``[lo, hi]`` the range of the
demonstrations' returns that the strategy observed. The objective is in raw units,
``E[R] - KL / kappa_raw``. ``kappa = 0`` rows are pi_0 itself (the DT's fitting error;
objective and gap undefined); the ``data`` row is the empirical distribution of the
demonstrations (the sampling error the DT was trained with).

The DT has context 1: the MDPs are trees, so a state is the whole history and one step of
context loses nothing, and the per-step return head ``P(G | s_t)`` is defined without
earlier return tokens (a longer context would condition it on the target already fed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from ogm.agents.conditioning import make_strategy
from ogm.data.trajectory import Trajectory
from ogm.models.decision_transformer import DecisionTransformer
from ogm.studies import finite_mdp as fm
from ogm.studies.common import Row, dt_section, fit_dt, offline_config, study_run, write_table
from ogm.train.config import CommonConfig

RESULTS = "kl_equivalence.csv"
METHODS = ("dt", "ideal_dt", "tilted", "kl_optimum", "factorised", "factorised_dt")

DT_DEFAULTS = {  # a DT of context 1 (see the module doc), fitted closely
    "context_len": 1,
    "n_layer": 2,
    "n_head": 1,
    "n_embd": 64,
    "dropout": 0.0,
    "updates": 2000,
    "batch_size": 256,
    "learning_rate": 3e-3,
    "warmup_steps": 100,
    "fidelity_targets": 0,
}
DTSection = dt_section(DT_DEFAULTS)


class KLEquivalenceConfig(CommonConfig):
    """Exp-tilted conditioning against the KL-regularised optimum on exact finite MDPs."""

    kind: Literal["kl_equivalence"] = "kl_equivalence"
    mdps: list[str] = Field(default_factory=lambda: list(fm.MDPS))
    kappas: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0, 8.0])
    episodes: int = Field(5000, gt=0)  # demonstrations of pi_0 per MDP
    dt: DTSection  # the study's Decision Transformer: DT_DEFAULTS, then the config's values

    @field_validator("mdps")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(fm.MDPS))
        if unknown:
            raise ValueError(f"unknown MDPs {unknown}; choose from {sorted(fm.MDPS)}")
        return names

    @field_validator("kappas")
    @classmethod
    def _non_negative(cls, kappas: list[float]) -> list[float]:
        if any(k < 0 for k in kappas):
            raise ValueError(f"kappas must be >= 0, got {kappas}")
        return kappas


def demonstrations(mdp: fm.FiniteMDP, index: np.ndarray) -> list[Trajectory]:
    """The trajectories numbered ``index`` as ``Trajectory`` objects (one-hot observations)."""
    T = mdp.trajectories
    done = np.zeros(mdp.horizon, bool)
    done[-1] = True
    return [
        Trajectory(
            observations=mdp.observation(T.states[i]),
            actions=T.actions[i],
            rewards=T.rewards[i],
            terminations=done,
            truncations=np.zeros(mdp.horizon, bool),
        )
        for i in index
    ]


@torch.no_grad()
def dt_tables(model: DecisionTransformer, mdp: fm.FiniteMDP) -> tuple[np.ndarray, np.ndarray]:
    """The DT as tables: ``head[s, g] = P(G = g | s)`` (S, G + 1) and ``cond[s, j, a]`` =
    ``pi(a | s, return-to-go j - G)`` (S, 2G + 1, A), from one batched forward pass."""
    G, S = mdp.max_return, mdp.n_states
    g = np.arange(-G, G + 1)
    states = np.repeat(np.arange(S), len(g))
    out = model(
        torch.as_tensor(np.tile(g, S), dtype=torch.float32).view(-1, 1, 1),
        torch.as_tensor(mdp.observation(states)).unsqueeze(1),
        torch.zeros(len(states), 1, dtype=torch.long),
        torch.as_tensor(mdp.depth[states]).view(-1, 1),
    )
    cond = out.policy.probs()[:, 0].double().numpy().reshape(S, len(g), -1)
    head = torch.softmax(out.return_logits[:, 0].double(), -1).numpy().reshape(S, len(g), -1)
    return head[:, 0], cond


def compare(
    mdp: fm.FiniteMDP,
    kappa_raw: float,
    dists: dict[str, np.ndarray],
    off_support: dict[str, float],
) -> list[Row]:
    """One row per distribution: return, KL, objective and its gap, TV to the others."""
    p0 = fm.trajectory_probs(mdp, mdp.prior)
    best = fm.objective(mdp, dists["kl_optimum"], kappa_raw) if kappa_raw > 0 else np.nan
    rows = []
    for method, p in dists.items():
        value = fm.objective(mdp, p, kappa_raw) if kappa_raw > 0 else np.nan
        rows.append(
            {
                "method": method,
                "expected_return": fm.expected_return(mdp, p),
                "kl": fm.kl(p, p0),
                "objective": value,
                "gap": best - value,
                **{f"tv_{other}": fm.tv(p, dists[other]) for other in METHODS if other in dists},
                "off_support": off_support.get(method, np.nan),
            }
        )
    return rows


def study_mdp(config: KLEquivalenceConfig, name: str, index: int) -> list[Row]:
    """Train the DT on pi_0's data for one MDP, then compare every distribution per kappa."""
    mdp = fm.MDPS[name]()
    G = mdp.max_return
    p0 = fm.trajectory_probs(mdp, mdp.prior)
    rng = np.random.default_rng([config.seed, index])
    sample = fm.sample_trajectories(mdp, p0, config.episodes, rng)
    data = demonstrations(mdp, sample)
    settings = offline_config(config, config.dt, n_bins=G + 1, return_range=(0.0, float(G)))
    model = fit_dt(settings, data, fm.FiniteMDPEnv(mdp).action_space)
    head_dt, cond_dt = dt_tables(model, mdp)
    head, cond, defined = fm.return_conditioned(mdp)
    centers = np.arange(G + 1, dtype=np.float64)
    rtg_seen = np.zeros(G + 1, bool)  # returns-to-go the data showed anywhere: the support
    rtg_seen[np.unique(np.concatenate([t.returns_to_go() for t in data]).astype(int))] = True
    empirical = np.bincount(sample, minlength=len(p0)) / len(sample)

    rows = []
    for kappa in config.kappas:
        strategy = make_strategy(f"exp_tilted:{kappa}")
        strategy.observe([t.ret for t in data])
        _, span = strategy.return_unit(centers)
        kappa_raw = kappa / span
        q_dt = strategy.target_probs(head_dt[:1], centers)[0]
        q_exact = head[0] * np.exp(kappa_raw * (centers - G))
        a, off_a = fm.conditioned_trajectory_probs(mdp, q_dt, cond_dt, defined)
        a_star, off_star = fm.conditioned_trajectory_probs(
            mdp, q_exact / q_exact.sum(), cond, defined
        )
        pi_c, _ = fm.soft_value_iteration(mdp, kappa_raw)
        dists = {
            "dt": a,
            "ideal_dt": a_star,
            "tilted": fm.tilted(mdp, kappa_raw),
            "kl_optimum": fm.trajectory_probs(mdp, pi_c),
            "factorised": fm.trajectory_probs(mdp, fm.factorised(mdp, kappa_raw)),
            "factorised_dt": fm.trajectory_probs(
                mdp, fm.per_step_tilt(head_dt, cond_dt, kappa_raw, rtg_seen)
            ),
        }
        if kappa == 0:
            dists["data"] = empirical
        off = {"dt": off_a, "ideal_dt": off_star}
        for row in compare(mdp, kappa_raw, dists, off):
            rows.append(
                {
                    "mdp": name,
                    "stochastic": int(mdp.stochastic),
                    "kappa": kappa,
                    "kappa_raw": kappa_raw,
                    **row,
                }
            )
    return rows


def run(config: KLEquivalenceConfig, run_dir: Path) -> None:
    """Compute the study for every MDP and write ``kl_equivalence.csv`` (module doc)."""
    with study_run(run_dir, "kl_equivalence", config) as run:
        rows = [r for i, name in enumerate(config.mdps) for r in study_mdp(config, name, i)]
        write_table(run.path / RESULTS, rows)
