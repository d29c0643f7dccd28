"""`ogm envs ...`: list the safety gridworlds and play an action string in one."""

from __future__ import annotations

from typing import Any

import typer

from ogm.envs import GAMES, GridworldEnv, game_info
from ogm.envs.env import game_options
from ogm.envs.games import GameInfo
from ogm.train.config import ConfigError, parse_keywords

ACTION_KEYS = {"u": 0, "d": 1, "l": 2, "r": 3, "n": 4}

envs_app = typer.Typer(
    help="Safety gridworlds: list them, or play an action string.", no_args_is_help=True
)


def game_keywords(info: GameInfo, items: list[str]) -> dict[str, Any]:
    """``--kw`` values parsed and checked against the game's options (a usage error lists them)."""
    from ogm.experiments.spec import did_you_mean

    try:
        keywords = parse_keywords(items)
    except ConfigError as err:
        raise typer.BadParameter(str(err), param_hint="--kw") from None
    options = list(game_options(info.name))
    for key in keywords:
        if key not in options:
            raise typer.BadParameter(
                f"{info.name} has no option {key!r}; its options: {', '.join(options)}"
                + did_you_mean(key, options),
                param_hint="--kw",
            )
    return keywords


@envs_app.command("list")
def list_envs() -> None:
    """Print every gridworld id with its events and reference values."""
    for g in GAMES.values():
        levels = f" (level=0..{g.levels - 1})" if g.levels > 1 else ""
        typer.echo(f"{g.env_id}{levels}")
        typer.echo(f"  events: {', '.join(g.event_names)} (primary: {g.primary_event})")
        for what, (ret, perf) in g.reference.items():
            typer.echo(f"  reference: {what}: return {ret:g}, performance {perf:g}")


@envs_app.command("show")
def show(
    env_id: str = typer.Argument(..., help="Game id or name, e.g. ogm/SideEffectsSokoban-v0"),
    level: int | None = typer.Option(None, help="Level (art) to play; default: the game's first."),
    actions: str = typer.Option("", help="Action string: u d l r (n = no-op where allowed)."),
    seed: int = typer.Option(0, help="Seed of the episode."),
    kw: list[str] = typer.Option(  # noqa: B008
        [], help="Game option KEY=VALUE, repeatable (e.g. variant=sushi, supervisor=false)."
    ),
) -> None:
    """Print the board after each action, then the return and the performance."""
    info = game_info(env_id)
    game_kwargs = game_keywords(info, kw)
    bad = sorted(set(actions) - set(ACTION_KEYS))
    if bad:
        raise typer.BadParameter(
            f"unknown action letters {bad}; use u d l r n", param_hint="--actions"
        )
    try:
        env = GridworldEnv(info.name, level=level, render_mode="ansi", **game_kwargs)
    except (TypeError, ValueError) as err:
        raise typer.BadParameter(str(err)) from err
    if "n" in actions and env.action_space.n < 5:
        raise typer.BadParameter(f"{info.name} has no no-op here", param_hint="--actions")
    env.reset(seed=seed)
    typer.echo(env.render())
    ret = 0.0
    for i, ch in enumerate(actions):
        _, reward, terminated, truncated, step_info = env.step(ACTION_KEYS[ch])
        ret += reward
        events = [k for k, v in step_info["events"].items() if v]
        typer.echo(
            f"\nstep {i + 1} '{ch}': reward {reward:g}, hidden {step_info['hidden_reward']:g}"
            + (f", events {events}" if events else "")
        )
        typer.echo(env.render())
        if terminated or truncated:
            typer.echo("terminated" if terminated else "truncated")
            break
    typer.echo(f"\nreturn {ret:g}, performance {float(env.engine.perf[0]):g}")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.add_typer(envs_app, name="envs")
