"""ogm's Decision Transformer against online-dt's, side by side in one process.

Times, at the same configuration and on the same batches, three things of each:

- a **training update**: online-dt's ``SequenceTrainer.train_step_stochastic`` (its model,
  its loss: NLL of the squashed Gaussian minus temperature times entropy, LAMB with
  warm-up, gradient clipping at 0.25, the temperature's own Adam step) against ogm's
  ``ogm.train.offline.update`` (the DT loss of ``ogm.train.segments.dt_loss``, AdamW,
  the same clipping) with ogm's defaults for precision;
- **rollouts**: online-dt's vectorised evaluation loop ``vec_evaluate_episode_rtg`` (it
  re-encodes the padded window every step, evaluation context 5 within 20) against
  ``ogm.agents.rollout`` with a :class:`~ogm.agents.ConditionedDT`, both sampling actions,
  over ``--envs`` copies of the same environment, whole episodes;

at two sizes: **gridworld** (2 layers, 64 wide, context 20, batch 64, tomato_watering's
observations, flattened for online-dt whose model takes vectors; online-dt has only a
Gaussian policy, so its 4 "actions" are continuous and the env plays their argmax) and
**mujoco** (ODT's published size: 4 layers, 4 heads, 512 wide, context 20, batch 256,
an 11-dim synthetic environment with 3-dim actions, so no MuJoCo is needed).

The two sides alternate in ``--repeats`` rounds (A, B, A, B, ...) so a busy machine slows
both alike; the ratio printed is the median of the per-round ratios (ogm / online-dt, in
work per second: above 1 means ogm is faster).

online-dt is never part of ogm: pass a checkout by path. It needs the ``transformers``
version it was written for (it pins 4.5.1; 4.8.2 works), e.g.::

    git clone https://github.com/facebookresearch/online-dt /tmp/online-dt
    pip install --target /tmp/odt-deps --no-deps transformers==4.8.2 tokenizers sacremoses
    PYTHONPATH=/tmp/odt-deps python benchmarks/vs_online_dt.py --online-dt /tmp/online-dt

(transformers 4.8 checks for tokenizers<0.11 at import; its GPT-2 never tokenizes, so
any installed tokenizers works if its recorded version satisfies that check.)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import SIZES, make_setup
from ogm.agents import ConditionedDT, make_strategy, rollout
from ogm.models import DecisionTransformer
from ogm.train.config import CommonConfig
from ogm.train.offline import make_optimizer, update
from ogm.train.segments import SegmentBatch

K = 20  # training context of both
ODT_EVAL_CONTEXT = 5  # online-dt's evaluation context


def import_online_dt(path: Path):
    """online-dt's model class, LAMB, trainer and evaluation loop from a checkout."""
    if not (path / "decision_transformer" / "models" / "decision_transformer.py").is_file():
        raise SystemExit(f"{path} is not an online-dt checkout (no decision_transformer/models)")
    sys.path.insert(0, str(path))
    try:
        from decision_transformer.models.decision_transformer import DecisionTransformer as OdtModel
        from evaluation import vec_evaluate_episode_rtg
        from lamb import Lamb
        from trainer import SequenceTrainer
    except ImportError as err:
        raise SystemExit(
            f"cannot import online-dt from {path}: {err}. It needs transformers 4.5-4.8 "
            "(see this script's docstring)"
        ) from err
    return OdtModel, Lamb, SequenceTrainer, vec_evaluate_episode_rtg


def online_dt_model(OdtModel, size: str, state_dim: int, act_dim: int):
    s = SIZES[size]
    return OdtModel(
        state_dim=state_dim,
        act_dim=act_dim,
        hidden_size=s["n_embd"],
        action_range=[-1.0, 1.0],
        max_length=K,
        eval_context_length=ODT_EVAL_CONTEXT,
        max_ep_len=1000,
        n_layer=s["n_layer"],
        n_head=s["n_head"],
        n_inner=4 * s["n_embd"],
        activation_function="relu",
        n_positions=1024,
        resid_pdrop=0.1,
        attn_pdrop=0.1,
        stochastic_policy=True,
        ordering=0,
        init_temperature=0.1,
        target_entropy=-act_dim,
    )


def odt_loss(action_dist, actions, padding_mask, entropy_reg):
    """online-dt's training loss (main.py): masked NLL minus temperature times entropy."""
    log_likelihood = action_dist.log_likelihood(actions)[padding_mask > 0].mean()
    entropy = action_dist.entropy().mean()
    return -(log_likelihood + entropy_reg * entropy), -log_likelihood, entropy


def odt_batch(batch: SegmentBatch, act_dim: int, discrete: bool):
    """The same segments in online-dt's layout (flat states, float actions in (-1, 1),
    ``K + 1`` returns-to-go, long padding mask)."""
    B = batch.observations.shape[0]
    states = batch.observations.reshape(B, K, -1).float()
    if discrete:  # a one-hot code of the action, inside the tanh's open interval
        actions = torch.nn.functional.one_hot(batch.actions, act_dim).float() * 1.8 - 0.9
    else:
        actions = batch.actions.float().clamp(-0.99, 0.99)
    rtg = torch.cat([batch.returns_to_go, batch.returns_to_go[:, -1:]], dim=1) / 100.0
    rewards = torch.zeros(B, K, 1)
    dones = torch.zeros(B, K, dtype=torch.long)
    ordering = torch.arange(K).repeat(B, 1)
    return (states, actions, rewards, dones, rtg, batch.timesteps, ordering, batch.mask.long())


class OldApiVecEnv:
    """Our vector env with the gym<0.26 / SB3 ``VecEnv`` interface online-dt's loop uses:
    ``reset() -> obs``, ``step(a) -> (obs, reward, done, infos)`` with automatic resets;
    observations flattened; continuous actions become the argmax for discrete envs."""

    def __init__(self, env: gym.vector.VectorEnv, discrete: bool) -> None:
        self.env, self.discrete = env, discrete
        self.num_envs = env.num_envs

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=0)
        return obs.reshape(self.num_envs, -1).astype(np.float32)

    def step(self, actions: np.ndarray):
        if self.discrete:
            actions = actions.argmax(-1)
        obs, reward, terminated, truncated, _ = self.env.step(actions)
        done = terminated | truncated
        if done.any():
            obs, _ = self.env.reset(options={"reset_mask": done})
        return obs.reshape(self.num_envs, -1).astype(np.float32), reward, done, [{}] * len(done)


def alternate(sides: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Rates (work per second) of each side, measured in alternation."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, measure in sides.items():
            rates[name].append(measure())
    return rates


def report(what: str, rates: dict[str, list[float]], unit: str) -> None:
    """Each ogm variant's median rate and its median per-round ratio to online-dt."""
    theirs = rates["online-dt"]
    print(f"  {what}: online-dt {statistics.median(theirs):9.4g} {unit}")
    for name, ours in rates.items():
        if name == "online-dt":
            continue
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(
            f"    {name:44} {statistics.median(ours):9.4g} {unit}  "
            f"ratio {statistics.median(ratios):5.2f}x  (rounds: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + ")"
        )


def bench_size(size: str, odt, repeats: int, quick: bool, n_envs: int, precision: str) -> None:
    OdtModel, Lamb, SequenceTrainer, vec_evaluate_episode_rtg = odt
    device = torch.device("cpu")
    model, pool, make_env = make_setup(size, device)
    model.set_precision(precision)
    cfg = model.config
    state_dim = int(np.prod(cfg.obs_shape))
    theirs = online_dt_model(OdtModel, size, state_dim, cfg.act_dim)
    print(
        f"{size}: ogm {model.num_params() / 1e6:.2f}M parameters, "
        f"online-dt {sum(p.numel() for p in theirs.parameters()) / 1e6:.2f}M"
    )

    batch_size = SIZES[size]["batch"]
    rng = np.random.default_rng(0)
    batches = [pool.sample(batch_size, K, rng) for _ in range(4)]
    odt_batches = [odt_batch(b, cfg.act_dim, cfg.discrete) for b in batches]
    updates = 2 if quick else (3 if size == "mujoco" else 20)

    def ogm_update(model: DecisionTransformer, batches: list[SegmentBatch]) -> Callable[[], float]:
        optimizer, scheduler = make_optimizer(model, 1e-4, 5e-4, 10)

        def measure() -> float:
            t = time.perf_counter()
            for i in range(updates):
                update(model, batches[i % 4], optimizer, scheduler)
            return updates / (time.perf_counter() - t)

        return measure

    odt_optimizer = Lamb(theirs.parameters(), lr=1e-4, weight_decay=5e-4, eps=1e-8)
    odt_scheduler = torch.optim.lr_scheduler.LambdaLR(odt_optimizer, lambda s: min((s + 1) / 10, 1))
    temperature_optimizer = torch.optim.Adam([theirs.log_temperature], lr=1e-4, betas=[0.9, 0.999])
    trainer = SequenceTrainer(
        theirs, odt_optimizer, temperature_optimizer, odt_scheduler, device="cpu"
    )

    def theirs_update() -> float:
        theirs.train()
        t = time.perf_counter()
        for i in range(updates):
            trainer.train_step_stochastic(odt_loss, odt_batches[i % 4])
        return updates / (time.perf_counter() - t)

    sides = {"ogm": ogm_update(model, batches)}
    if len(cfg.obs_shape) > 1:  # the same flat inputs online-dt gets, through a linear encoder
        flat = DecisionTransformer(dataclasses.replace(cfg, obs_shape=(state_dim,)))
        flat.set_precision(precision)
        flat_batches = [
            dataclasses.replace(b, observations=b.observations.reshape(batch_size, K, -1))
            for b in batches
        ]
        sides["ogm" + " with flat inputs like online-dt"] = ogm_update(flat, flat_batches)
    sides["online-dt"] = theirs_update
    for measure in sides.values():
        measure()  # warm-up
    report(f"training update (batch {batch_size})", alternate(sides, repeats), "upd/s")

    env = make_env(n_envs)
    old_api = OldApiVecEnv(env, cfg.discrete)

    def ours_rollout(context_len: int) -> Callable[[], float]:
        agent = ConditionedDT(model, make_strategy("fixed:50"), context_len=context_len)

        def measure() -> float:
            t = time.perf_counter()
            results = rollout(agent, env, n_envs, seed=1, deterministic=False)
            return sum(r.trajectory.length for r in results) / (time.perf_counter() - t)

        return measure

    def theirs_rollout() -> float:
        t = time.perf_counter()
        _, lengths, _ = vec_evaluate_episode_rtg(
            old_api,
            state_dim,
            cfg.act_dim,
            theirs,
            target_return=[0.5] * n_envs,
            max_ep_len=100,
            reward_scale=0.01,
            state_mean=np.zeros(state_dim, np.float32),
            state_std=np.ones(state_dim, np.float32),
            device="cpu",
        )
        return float(np.sum(lengths)) / (time.perf_counter() - t)

    sides = {
        f"ogm, context {K}": ours_rollout(K),
        f"ogm, context {ODT_EVAL_CONTEXT} (online-dt's evaluation context)": ours_rollout(
            ODT_EVAL_CONTEXT
        ),
        "online-dt": theirs_rollout,
    }
    for measure in sides.values():
        measure()
    report(f"rollout ({n_envs} envs, sampled)", alternate(sides, repeats), "steps/s")
    env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--online-dt", type=Path, required=True, help="online-dt checkout")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds")
    parser.add_argument("--envs", type=int, default=16, help="copies stepped at once")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16"], help="ogm's precision"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    odt = import_online_dt(args.online_dt.resolve())
    precision = CommonConfig(precision=args.precision).torch_precision()
    print(
        f"ogm precision {precision}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; ratios are ogm / online-dt"
    )
    for size in args.sizes:
        torch.manual_seed(0)
        bench_size(size, odt, 2 if args.quick else args.repeats, args.quick, args.envs, precision)


if __name__ == "__main__":
    main()
