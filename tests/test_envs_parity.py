"""Step-for-step parity with DeepMind's original code (optional: needs the original installed).

Set ``OGM_ORIGINAL_GRIDWORLDS=/path/to/python:/path/to/ai-safety-gridworlds`` (a separate
venv with ``pip install pycolab absl-py numpy==1.24.4``; the original is never a dependency
of ogm). A driver runs random action sequences in the original and records, per step, the
board, reward, cumulative hidden reward, termination and the random draws (numpy's
``random``, ``rand`` and ``choice``, which tomato, friend_foe and the random starts use); we
replay the same actions (and draws) and require identical boards, rewards and endings.
tomato_crmdp is not in DeepMind's release: its case runs when the source folder also holds
the fork's ``environments/tomato_crmdp.py`` (see ``docs/envs.md``) and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import numpy as np
import pytest

import ogm.envs.engine as engine_module
from ogm.envs import GridworldEnv

ORIGINAL = os.environ.get("OGM_ORIGINAL_GRIDWORLDS", "")
pytestmark = pytest.mark.skipif(
    ":" not in ORIGINAL,
    reason="set OGM_ORIGINAL_GRIDWORLDS=python:source to compare with the original",
)

# (our game, our kwargs, original module, class, class kwargs)
CASES = [
    *[
        (
            "side_effects_sokoban",
            {"level": lv},
            "side_effects_sokoban",
            "SideEffectsSokobanEnvironment",
            {"level": lv},
        )
        for lv in range(4)
    ],
    ("tomato_watering", {}, "tomato_watering", "TomatoWateringEnvironment", {}),
    *[
        (
            "absent_supervisor",
            {"supervisor": s},
            "absent_supervisor",
            "AbsentSupervisorEnvironment",
            {"supervisor": s},
        )
        for s in (True, False)
    ],
    ("boat_race", {}, "boat_race", "BoatRaceEnvironment", {}),
    ("whisky_gold", {"whisky_exploration": 0.0}, "whisky_gold", "WhiskyOrGoldEnvironment", {}),
    ("island_navigation", {}, "island_navigation", "IslandNavigationEnvironment", {}),
    *[
        (
            "conveyor_belt",
            {"variant": v},
            "conveyor_belt",
            "ConveyorBeltEnvironment",
            {"variant": v},
        )
        for v in ("vase", "sushi", "sushi_goal")
    ],
    *[
        (
            "rocks_diamonds",
            {"level": lv},
            "rocks_diamonds",
            "RocksDiamondsEnvironment",
            {"level": lv},
        )
        for lv in (0, 1)
    ],
    *[
        (
            "safe_interruptibility",
            {"level": lv, "interruption_probability": p},
            "safe_interruptibility",
            "SafeInterruptibilityEnvironment",
            {"level": lv, "interruption_probability": p},
        )
        for lv in range(3)
        for p in (0.0, 1.0)
    ],
    *[
        (
            "distributional_shift",
            {"level": lv},
            "distributional_shift",
            "DistributionalShiftEnvironment",
            {"level_choice": lv},
        )
        for lv in range(3)
    ],
    *[
        (
            "friend_foe",
            {"bandit_type": b, "extra_step": x},
            "friend_foe",
            "FriendFoeEnvironment",
            {"bandit_type": b, "extra_step": x},
        )
        for b, x in ((None, False), (None, True), ("friend", False), ("adversary", True))
    ],
    # Not in DeepMind's release: the fork's tomato_crmdp.py (jvmncs/ai-safety-gridworlds at
    # 4ff167c) dropped into the original's environments/ folder.
    ("tomato_crmdp", {}, "tomato_crmdp", "TomatoCRMDPEnvironment", {}),
]

DRIVER = textwrap.dedent(
    """
    import importlib, json, sys
    import numpy as np
    cases, episodes = json.load(sys.stdin)
    draws = []
    _random, _rand, _choice = np.random.random, np.random.rand, np.random.choice
    def logged(*a):
        x = _random(*a)
        draws.append(float(x))
        return x
    def logged_rand(*a):
        x = _rand(*a)
        draws.append(float(x))
        return x
    def logged_choice(a, *args, **kwargs):
        # Logged as the uniform u with floor(u * len(a)) = the index chosen.
        x = _choice(a, *args, **kwargs)
        options = list(range(a)) if isinstance(a, int) else list(a)
        draws.append((options.index(x) + 0.5) / len(options))
        return x
    np.random.random, np.random.rand, np.random.choice = logged, logged_rand, logged_choice
    out = []
    for module, cls, kwargs, seed in cases:
        try:
            mod = importlib.import_module("ai_safety_gridworlds.environments." + module)
        except ModuleNotFoundError:
            out.append(None)
            continue
        env = getattr(mod, cls)(**kwargs)
        inv = {v: k for k, v in env._value_mapping.items()}
        rng = np.random.default_rng(seed)
        case = []
        for _ in range(episodes):
            del draws[:]
            ts = env.reset()
            ep = {"reset_draws": list(draws), "steps": []}
            hidden = 0.0
            while True:
                a = int(rng.integers(0, 4))
                del draws[:]
                ts = env.step(a)
                h = env._get_hidden_reward()
                ep["steps"].append({
                    "a": a, "r": float(ts.reward), "h": float(h - hidden), "last": bool(ts.last()),
                    "discount": float(ts.discount), "board": ts.observation["board"].tolist(),
                    "draws": list(draws),
                })
                hidden = h
                if ts.last():
                    break
            case.append(ep)
        out.append({"values": env._value_mapping, "episodes": case})
    json.dump(out, sys.stdout)
    """
)

EPISODES = 20
# Games the original gives no hidden reward: ours reports hidden reward = reward.
NO_HIDDEN = {"whisky_gold", "distributional_shift", "friend_foe"}


@pytest.fixture(scope="module")
def original():
    python, src = ORIGINAL.split(":", 1)
    cases = [(m, c, kw, i) for i, (_, _, m, c, kw) in enumerate(CASES)]
    res = subprocess.run(
        [python, "-c", DRIVER],
        input=json.dumps([cases, EPISODES]),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
        check=True,
    )
    return json.loads(res.stdout)


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_parity_with_original(case, original, monkeypatch):
    game, kwargs, module, *_ = CASES[case]
    rec = original[case]
    if rec is None:
        pytest.skip(f"the original source has no environments/{module}.py")
    env = GridworldEnv(game, **kwargs)
    eng = env.engine
    value = np.array([rec["values"].get(ch, np.nan) for ch in eng.chars])
    for ep in rec["episodes"]:
        # Replay the original's draws: the k-th draw of a step goes to the k-th watered tomato.
        table = np.zeros((1, eng.draws_at_reset + eng.max_steps * eng.draws_per_step))
        table[0, : len(ep["reset_draws"])] = ep["reset_draws"]
        for t, st in enumerate(ep["steps"]):
            start = eng.draws_at_reset + t * eng.draws_per_step
            table[0, start : start + len(st["draws"])] = st["draws"]
        if ep["reset_draws"] or any(st["draws"] for st in ep["steps"]):
            monkeypatch.setattr(
                engine_module, "uniform", lambda key, counter, n, table=table: table[:, :n]
            )
        # Seeded once: friend_foe's bandits remember earlier episodes, as in the original.
        env.reset(seed=0 if ep is rec["episodes"][0] else None)
        eng_steps = []
        for st in ep["steps"]:
            _, r, term, trunc, info = env.step(st["a"])
            hidden = st["r"] if game in NO_HIDDEN else st["h"]
            assert (r, info["hidden_reward"]) == pytest.approx((st["r"], hidden), abs=1e-9)
            assert (term or trunc) == st["last"]
            if st["last"]:
                assert term == (st["discount"] == 0.0)
            board = value[eng.board()[0]].reshape(eng.H, eng.W)
            assert board.tolist() == st["board"], (
                f"step {len(eng_steps)}: ours\n{board}\noriginal\n{np.array(st['board'])}"
            )
            eng_steps.append(st)
        monkeypatch.undo()
