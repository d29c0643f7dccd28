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
        float, typer.Option(min=0.0, max=1.0, help="Probability of a random action.")
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
