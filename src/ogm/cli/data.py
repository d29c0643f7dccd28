"""`ogm data collect|info`: make demonstration datasets and summarise any Minari dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ogm.data.recipe import DatasetRecipe
from ogm.train.config import ConfigError, parse_keywords

# The command's defaults are the recipe's.
_DEFAULT = {name: field.default for name, field in DatasetRecipe.model_fields.items()}

data_app = typer.Typer(
    help="Demonstration datasets (Minari format): collect them, summarise them.",
    no_args_is_help=True,
)


def resolve_env_id(game: str) -> str:
    """A Gymnasium id for ``game``: an env id, or a short name such as ``tomato_watering``."""
    import gymnasium as gym

    from ogm.envs import GAMES

    if game in gym.registry:
        return game
    wanted = game.lower().replace("-", "_")
    for name, info in GAMES.items():
        camel = info.env_id.split("/")[-1].removesuffix("-v0")
        if wanted in (name.lower(), camel.lower()):
            return info.env_id
    raise typer.BadParameter(
        f"unknown game {game!r}; use an env id or one of: {', '.join(sorted(GAMES))}",
        param_hint="GAME",
    )


def _print_summary(summary: dict[str, Any]) -> None:
    stats = ("mean", "min", "q25", "median", "q75", "max")
    typer.echo(f"dataset      {summary['path']}")
    typer.echo(f"env          {summary['env_id']} {json.dumps(summary['env_kwargs'])}")
    typer.echo(f"episodes     {summary['episodes']}")
    typer.echo(f"steps        {summary['steps']}")
    typer.echo(f"{'':12} " + " ".join(f"{s:>9}" for s in stats))
    for key in ("return", "performance", "length"):
        typer.echo(f"{key:12} " + " ".join(f"{summary[key][s]:9.3f}" for s in stats))
    if summary["events"]:
        typer.echo(f"{'event':28} {'episodes':>9} {'steps':>9}")
        for name, rates in summary["events"].items():
            typer.echo(f"{name:28} {rates['episodes']:9.4f} {rates['steps']:9.4f}")
    else:
        typer.echo("events       none recorded")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.add_typer(data_app, name="data")


@data_app.command()
def collect(
    game: Annotated[str, typer.Argument(help="Env id or short name, e.g. tomato_watering.")],
    out: Annotated[Path, typer.Option("--out", help="Dataset directory to write.")],
    episodes: Annotated[int, typer.Option(min=1, help="Episodes.")] = _DEFAULT["episodes"],
    epsilon: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Probability of a slip (a random safe action).")
    ] = _DEFAULT["epsilon"],
    skill: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="1 = best safe route; lower = detours.")
    ] = _DEFAULT["skill"],
    seed: Annotated[int, typer.Option(help="Episode i is reset with seed + i.")] = _DEFAULT["seed"],
    level: Annotated[int | None, typer.Option(help="Level of the game (sokoban: 0-3).")] = None,
    kw: Annotated[
        list[str] | None,
        typer.Option(help="Env option KEY=VALUE, repeatable (e.g. variant=sushi)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset.")] = False,
) -> None:
    """Collect episodes with the game's scripted safe demonstrator into a Minari dataset."""
    from ogm.cli.envs import game_keywords
    from ogm.data import collect_dataset, summarize
    from ogm.envs import GAMES

    env_id = resolve_env_id(game)
    info = next((g for g in GAMES.values() if g.env_id == env_id), None)
    if info is not None:
        env_kwargs = game_keywords(info, kw or [])
    else:  # another Gymnasium id: its options are its own
        try:
            env_kwargs = parse_keywords(kw or [])
        except ConfigError as err:
            raise typer.BadParameter(str(err), param_hint="--kw") from None
    if level is not None:
        env_kwargs["level"] = level
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise typer.BadParameter(
            f"{out} exists; pass --overwrite to replace it", param_hint="--out"
        )
    recipe = DatasetRecipe(  # a bad value ends the command in ogm.cli.main (exit code 2)
        env_id=env_id,
        env_kwargs=env_kwargs,
        episodes=episodes,
        epsilon=epsilon,
        skill=skill,
        seed=seed,
    )
    collect_dataset(recipe, out, overwrite=overwrite)
    _print_summary(summarize(out))


@data_app.command()
def info(
    path: Annotated[str, typer.Argument(help="Dataset directory or local Minari dataset id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Summarise a dataset: episodes, steps, return and performance quantiles, event rates."""
    from ogm.data import summarize

    summary = summarize(path)  # a DatasetError ends the command in ogm.cli.main (exit code 2)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)


@data_app.command("collect-rl")
def collect_rl_command(
    env_id: Annotated[str, typer.Argument(help="Gymnasium id: Hopper-v5, ALE/Breakout-v5, ...")],
    out: Annotated[Path, typer.Option("--out", help="Run directory; datasets in OUT/datasets.")],
    timesteps: Annotated[int, typer.Option(min=1, help="Training steps of the agent.")] = 1_000_000,
    algo: Annotated[str, typer.Option(help="auto (SAC / DQN on frames / PPO), sac, dqn, ppo.")] = (
        "auto"
    ),
    snapshots: Annotated[int, typer.Option(min=1, help="Policy snapshots after step 0.")] = 10,
    episodes: Annotated[int, typer.Option(min=1, help="Episodes per dataset.")] = 100,
    eval_episodes: Annotated[int, typer.Option(min=1, help="Greedy episodes per snapshot.")] = 10,
    net_arch: Annotated[str, typer.Option(help="MLP widths, comma-separated.")] = "256,256",
    seed: Annotated[int, typer.Option(help="Seed of training and rollouts.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N].")] = "auto",
    hp: Annotated[
        list[str] | None,
        typer.Option(help="SB3 hyperparameter KEY=VALUE, repeatable (e.g. learning_rate=1e-3)."),
    ] = None,
    kw: Annotated[list[str] | None, typer.Option(help="Env option KEY=VALUE, repeatable.")] = None,
) -> None:
    """Train an SB3 agent and record D4RL-style random / medium / medium-replay / expert
    datasets from its snapshots; rerun on the same OUT to continue a killed collection."""
    from ogm.data import summarize
    from ogm.data.collect_rl import CollectRLConfig, collect_rl, resolve_rl_env

    try:
        widths = [int(w) for w in net_arch.split(",") if w.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"{net_arch!r} is not a comma-separated list of widths", param_hint="--net-arch"
        ) from None
    try:
        hyperparams, env_kwargs = parse_keywords(hp or []), parse_keywords(kw or [])
    except ConfigError as err:
        raise typer.BadParameter(str(err), param_hint="--hp / --kw") from None
    resolved, atari_kwargs = resolve_rl_env(env_id)
    config = CollectRLConfig(  # a bad value ends the command in ogm.cli.main (exit code 2)
        env_id=resolved,
        env_kwargs={**atari_kwargs, **env_kwargs},
        algo=algo,
        total_timesteps=timesteps,
        snapshots=snapshots,
        episodes=episodes,
        eval_episodes=eval_episodes,
        net_arch=widths,
        hyperparams=hyperparams,
        seed=seed,
        device=device,
    )
    paths = collect_rl(config, out)
    typer.echo(f"{'dataset':28} {'episodes':>9} {'steps':>9} {'return':>12}")
    for path in paths.values():
        summary = summarize(path)
        name = summarize_name(path)
        typer.echo(
            f"{name:28} {summary['episodes']:9d} {summary['steps']:9d} "
            f"{summary['return']['mean']:12.2f}"
        )


def summarize_name(path: Path) -> str:
    """The D4RL-style name a collect-rl dataset records."""
    from ogm.data.dataset import dataset_metadata

    return str(dataset_metadata(path).get("ogm", {}).get("d4rl_name", path.name))
