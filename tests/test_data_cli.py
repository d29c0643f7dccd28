"""`ogm data collect|info` and the recipe cache (`build_dataset`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from entrypoint import run_ogm
from ogm.cli.main import app
from ogm.data import DatasetRecipe, build_dataset, collect, load_trajectories

runner = CliRunner()


def _table(output: str) -> dict[str, list[str]]:
    """Printed lines keyed by their first word."""
    return {line.split()[0]: line.split()[1:] for line in output.splitlines() if line.strip()}


def test_collect_then_info_print_the_data(tmp_path):
    out = tmp_path / "tomato"
    args = ["data", "collect", "tomato_watering", "--episodes", "4", "--epsilon", "1.0"]
    result = runner.invoke(app, [*args, "--seed", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    trajs = load_trajectories(out)
    # The dataset is what the library collects for the same arguments.
    expected = collect("ogm/TomatoWatering-v0", 4, epsilon=1.0, seed=4)
    for a, b in zip(trajs, expected, strict=True):
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.hidden_rewards, b.hidden_rewards)

    result = runner.invoke(app, ["data", "info", str(out)])
    assert result.exit_code == 0, result.output
    table = _table(result.output)
    assert table["episodes"] == ["4"]
    assert table["steps"] == [str(sum(t.length for t in trajs))]
    for key, values in (
        ("return", [t.ret for t in trajs]),
        ("performance", [t.performance for t in trajs]),
    ):
        printed = [float(x) for x in table[key]]  # mean, min, q25, median, q75, max
        q = np.quantile(values, [0, 0.25, 0.5, 0.75, 1])
        np.testing.assert_allclose(printed, [np.mean(values), *q], atol=5e-4)
    on_o = [t.events["on_transformer"] for t in trajs]
    episodes_rate, steps_rate = (float(x) for x in table["on_transformer"])
    assert episodes_rate == pytest.approx(np.mean([f.any() for f in on_o]), abs=5e-5)
    assert steps_rate == pytest.approx(sum(f.sum() for f in on_o) / sum(map(len, on_o)), abs=5e-5)
    # epsilon 1 is a random walk among the safe slips only (never onto the transformer),
    # so even the most trembling demonstrator never shows the event
    assert episodes_rate == steps_rate == 0

    summary = json.loads(runner.invoke(app, ["data", "info", str(out), "--json"]).output)
    assert summary["env_id"] == "ogm/TomatoWatering-v0"
    assert summary["return"]["max"] == pytest.approx(max(t.ret for t in trajs))


def test_collect_with_env_id_and_level(tmp_path):
    out = tmp_path / "soko"
    args = ["data", "collect", "ogm/SideEffectsSokoban-v0", "--level", "2", "--episodes", "2"]
    result = runner.invoke(app, [*args, "--skill", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "data" / "metadata.json").read_text())["ogm"]
    assert meta["env_kwargs"] == {"level": 2}
    assert meta["recipe"]["skill"] == 0.5
    # Refuses to overwrite without --overwrite.
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code != 0 and "overwrite" in result.output


def test_cli_errors_are_clear(tmp_path, capsys):
    """Each ends with exit code 2 and one line naming what is wrong, nothing written."""
    cases = [
        (["collect", "no_such_game"], "unknown game 'no_such_game'"),
        (["collect", "boat_race", "--seed", "-1"], "seed: Input should be greater than"),
        (["collect", "boat_race", "--episodes", "1e23"], "'--episodes'"),
        (["collect", "boat_race", "--episodes", "100000000000"], "less than or equal to 1000000"),
        (["collect", "boat_race", "--kw", "foo=1"], "foo"),
        (["info", str(tmp_path / "missing")], "no such dataset"),
    ]
    for args, message in cases:
        code, _, err = run_ogm(
            capsys, "data", *args, *(["--out", str(tmp_path / "x")] * (args[0] == "collect"))
        )
        assert code == 2 and message in err and len(err.splitlines()) == 1, (args, err)
    assert list(tmp_path.iterdir()) == []


def test_build_dataset_is_cached_by_recipe(tmp_path, monkeypatch):
    recipe = DatasetRecipe(env_id="ogm/BoatRace-v0", episodes=3, epsilon=0.1, seed=1)
    path = build_dataset(recipe, tmp_path)
    main = path / "data" / "main_data.hdf5"
    stamp = main.stat().st_mtime_ns
    assert build_dataset(recipe, tmp_path) == path
    assert main.stat().st_mtime_ns == stamp  # re-used, not rewritten
    with monkeypatch.context() as patch:  # checked once per process while its files stay
        patch.setattr("ogm.data.dataset.load_trajectories", lambda _: pytest.fail("read again"))
        assert build_dataset(recipe, tmp_path) == path
    expected = collect("ogm/BoatRace-v0", 3, epsilon=0.1, seed=1)
    for a, b in zip(load_trajectories(path), expected, strict=True):
        np.testing.assert_array_equal(a.actions, b.actions)
    # Another recipe gets another directory.
    other = build_dataset(recipe.model_copy(update={"seed": 2}), tmp_path)
    assert other != path
    # A damaged cache is rebuilt, with a warning.
    main.write_bytes(main.read_bytes()[:100])
    with pytest.warns(UserWarning, match="rebuilding"):
        assert build_dataset(recipe, tmp_path) == path
    assert len(load_trajectories(path)) == 3
