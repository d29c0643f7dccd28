"""Study ``simulator``: does the agent stay a simulator after online training?

A comment in the discussion of "Safety considerations for online generative modeling"
argues that a Decision Transformer stays a *simulator*: it models the whole distribution
of behaviour (what earns 10 as much as what earns 100) and only at inference is asked for
100, whereas RL optimises the network itself into the one agent that earns 100. If so,
the GM agent, and perhaps the OGM agent after online training, still produce low-return
behaviour when asked for it, while a policy finetuned by RL no longer can.

Measured per agent, all starting from the same GM agent (``pretrained``, a ``dt`` run):

- **conditioning fidelity** over the whole return range (``ogm.agents.fidelity``): the
  agent asked for ``fidelity_targets`` returns evenly spaced from the 5th percentile of
  the demonstrations' returns (a rare time-out would otherwise stretch the range to where
  no data are) to the highest return any of the agents reached (demonstrations, and every
  agent's final evaluation), ``fidelity_episodes`` episodes per target and mode: slope and
  Spearman rank correlation of achieved on asked, mean absolute error, and the mean
  return achieved at the lowest and at the highest target (the range of behaviour it can
  still be asked for);
- **policy entropy** (nats) on a fixed probe of demonstration segments fed their own
  returns-to-go, and the KL from the GM agent's policy there.

Agents: ``gm`` (the pretrained GM agent), each OGM agent of ``ogm`` (online finetuning,
agent kind ``odt``, from the GM agent; the table's keys name them and its values set their
``online`` section), and KL-regularised PPO finetuning of the GM agent's DT policy for each
``kl_betas`` (agent kind ``kl_ppo``, with ``kl_ppo`` overrides). They are trained here as
sub-runs of this run directory (``<run>/ogm-<name>/``, ``<run>/kl_ppo-beta=<b>/``), each
resumable as its kind is. KL-PPO's policy is still a DT with a return input, so every
agent is asked for targets the same way (``fixed:<target>``; returns-to-go fed unclamped,
as for every ``ConditionedDT``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ogm.agents.fidelity import fidelity_targets, measure_fidelity
from ogm.baselines import kl_ppo
from ogm.models.decision_transformer import DecisionTransformer
from ogm.studies.common import Row, study_run, write_table
from ogm.train import online
from ogm.train.config import CommonConfig
from ogm.train.offline import load_demonstrations, load_model
from ogm.train.rundir import RunDir
from ogm.train.segments import TrajectoryPool

RESULTS, FIDELITY = "simulator.csv", "simulator_fidelity.csv"


class SimulatorConfig(CommonConfig):
    """Conditioning fidelity and entropy of the GM agent, OGM agents and KL-PPO."""

    kind: Literal["simulator"] = "simulator"
    pretrained: str  # run directory of the GM agent ("@gm" in an experiment file)
    ogm: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"percentile": {"strategy": "percentile:95"}}
    )
    kl_betas: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0])
    kl_ppo: dict[str, Any] = Field(default_factory=dict)  # KLPPOConfig values for every beta
    fidelity_targets: int = Field(9, gt=1)
    fidelity_episodes: int = Field(8, gt=0)
    probe_segments: int = Field(256, gt=0)

    @model_validator(mode="after")
    def _valid_agents(self) -> SimulatorConfig:
        """Every sub-run's config is built now, so a bad value fails before anything runs."""
        for name in self.ogm:
            self.ogm_config(name)
        for beta in self.kl_betas:
            self.kl_config(beta)
        return self

    def common(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CommonConfig.model_fields}

    def ogm_config(self, name: str) -> online.OnlineConfig:
        return online.OnlineConfig(
            **self.common(), pretrained=self.pretrained, online=self.ogm[name]
        )

    def kl_config(self, beta: float) -> kl_ppo.KLPPOConfig:
        return kl_ppo.KLPPOConfig(
            **{**self.common(), **self.kl_ppo}, init=self.pretrained, policy="dt", beta=beta
        )


def probe_measures(
    model: DecisionTransformer, reference: DecisionTransformer, probe
) -> dict[str, float]:
    """Mean policy entropy on the probe, and the KL from the reference (the GM agent)."""
    policy = online.probe_policy(model, probe)
    m = probe.mask.float()
    return {
        "entropy": float((policy.entropy() * m).sum() / m.sum()),
        "kl_from_gm": online.policy_kl(online.probe_policy(reference, probe), policy, probe.mask),
    }


def final_return(run_dir: Path) -> float:
    """The best mean return of a run's final evaluation (greedy or sampled)."""
    final = RunDir.open(run_dir).record.get("final_eval") or {}
    values = [v.get("return") for v in final.values() if isinstance(v, dict)]
    return max((v for v in values if v is not None), default=-np.inf)


def run(config: SimulatorConfig, run_dir: Path) -> None:
    """Train the OGM and KL-PPO agents (sub-runs), then measure every agent (module doc)."""
    with study_run(run_dir, "simulator", config) as run:
        agents: dict[str, tuple[str, float, Path]] = {"gm": ("dt", np.nan, Path(config.pretrained))}
        for name in config.ogm:
            path = run.path / f"ogm-{name}"
            if not (path / "run.json").exists() or RunDir.open(path).status != "done":
                online.run(config.ogm_config(name), path)
            agents[f"ogm-{name}"] = ("odt", np.nan, path)
        for beta in config.kl_betas:
            path = run.path / f"kl_ppo-beta={beta:g}"
            if not (path / "run.json").exists() or RunDir.open(path).status != "done":
                kl_ppo.run(config.kl_config(beta), path)
            agents[f"kl_ppo-beta={beta:g}"] = ("kl_ppo", beta, path)

        demos = load_demonstrations(config)
        returns = [t.ret for t in demos]
        high = max([*returns, *(final_return(path) for _, _, path in agents.values())])
        targets = fidelity_targets([np.percentile(returns, 5), high], config.fidelity_targets)
        models = {name: load_model(path).eval() for name, (_, _, path) in agents.items()}
        K = models["gm"].config.context_len
        probe = TrajectoryPool(demos).sample(
            config.probe_segments, K, np.random.default_rng([config.seed, 1])
        )
        rows: list[Row] = []
        episodes: list[Row] = []
        for name, (kind, beta, _) in agents.items():
            measured = measure_fidelity(
                models[name], config, targets, episodes_per_target=config.fidelity_episodes
            )
            episodes += [{"agent": name, **row} for row in measured.rows]
            measures = probe_measures(models[name], models["gm"], probe)
            for mode, stats in measured.summary.items():
                achieved = {
                    t: np.mean(
                        [
                            r["return"]
                            for r in measured.rows
                            if (r["mode"], r["target"]) == (mode, t)
                        ]
                    )
                    for t in (targets[0], targets[-1])
                }
                rows.append(
                    {
                        "agent": name,
                        "kind": kind,
                        "beta": beta,
                        "mode": mode,
                        **stats,
                        "at_lowest": achieved[targets[0]],
                        "at_highest": achieved[targets[-1]],
                        "lowest_target": targets[0],
                        "highest_target": targets[-1],
                        **measures,
                    }
                )
        write_table(run.path / FIDELITY, episodes)
        write_table(run.path / RESULTS, rows)
