"""Experiment files: a declarative TOML description of runs to compare, and its grid.

An experiment names one environment, one demonstration dataset, the seeds, per-kind budgets
and the agents to compare. Each agent is a ``kind`` (see ``registry.AGENTS``) with config
values; lists in its ``sweep`` table expand into a grid of variants (a list of such tables
gives the union of their grids, for designs that vary one factor at a time instead of all
at once). Every variant runs once per seed. Example::

    name = "tomato-watering-quick"
    seeds = [0, 1]                      # or a count: seeds = 2 means [0, 1]

    [environment]
    env_id = "ogm/TomatoWatering-v0"

    [dataset]                           # a DatasetRecipe without env_id / env_kwargs
    episodes = 100
    epsilon = 0.05
    # or a collect-rl dataset (an RLDatasetRecipe without env_id / env_kwargs):
    # source = "collect-rl", quality = "medium", total_timesteps = 300000

    [common]                            # config values for every agent
    eval_episodes = 10

    [budgets.odt]                       # config values for every agent of one kind
    online_rounds = 20

    [[agents]]
    name = "ogm"
    kind = "odt"
    config = { entropy_constraint = true }
    sweep = { strategy = ["fixed:1.5", "percentile:95"], demo_fraction = [0.0, 0.5] }

Config values merge in this order, later winning (tables merge key by key): ``common``,
``budgets.<kind>``, the agent's ``config``, one point of its ``sweep``; then the experiment sets ``env_id``, ``env_kwargs``,
``dataset`` and ``seed``, which agents may not set themselves. Dotted keys (``"model.n_layer"``)
reach into nested config tables.

``[environment]`` may sweep the environment's options too: ``sweep = { k = [1, 2, 3] }``
(the cartesian product when it names several; ``env_id`` may be swept as well). Every point
of it is one environment, in which the whole grid of agents runs again: its runs lie under a
folder per point (``k=3/``), the dataset is collected in that environment, and ``"@agent"``
references stay within the point. ``[dataset]`` may sweep its own fields the same way
(``sweep = { quality = ["medium", "medium-replay"] }``): each dataset point multiplies the
environment points (folders ``env_id=Hopper-v5__quality=medium/``).

Sizes: a ``[sizes.<name>]`` table holds values that replace the file's when a run asks for
that size (``ogm run NAME --size smoke``); tables merge key by key as above, other values
(``seeds``, ``agents``) are replaced whole. The file as written is the full size; a built-in
experiment's ``smoke`` size runs on a CPU in minutes, for CI. The spec records the size
applied (``size``).

An optional ``[resources]`` table (``cpus``, ``gpus``, and a ``[resources.<kind>]`` table per
agent kind) says what each run reserves on a Ray cluster (docs/cluster.md).
"""

from __future__ import annotations

import difflib
import itertools
import re
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from ogm.data.recipe import DatasetRecipe, RLDatasetRecipe, recipe_union
from ogm.envs import check_env, check_event
from ogm.experiments import registry
from ogm.limits import MAX_SEEDS
from ogm.train.config import ConfigError, apply_overrides

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RESERVED_KEYS = ("env_id", "env_kwargs", "dataset", "seed")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ExperimentError(ValueError):
    """An experiment that cannot be read or run; the message names the file, line and field."""


def _non_empty(sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """A sweep table whose every list holds values."""
    for key, values in sweep.items():
        if not values:
            raise ValueError(f"sweep list {key!r} is empty")
    return sweep


# A sweep: one table of lists (a grid), or a list of tables (the union of their grids)
Sweep = dict[str, list[Any]] | list[dict[str, list[Any]]]


def grid(sweep: Sweep) -> list[dict[str, Any]]:
    """Every point of a sweep table (the cartesian product of its lists, the first key
    varying slowest); ``[{}]`` for an empty table. A list of tables gives their grids one
    after the other, each point once."""
    if isinstance(sweep, list):
        points = [point for table in sweep for point in grid(table)]
        return [p for i, p in enumerate(points) if p not in points[:i]] if sweep else [{}]
    keys = list(sweep)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*sweep.values())]


def _non_empty_sweep(sweep: Sweep) -> Sweep:
    """A sweep table, or a list of them, whose every list holds values."""
    for table in sweep if isinstance(sweep, list) else [sweep]:
        _non_empty(table)
    return sweep


class EnvironmentSpec(BaseModel):
    """The environment every agent of the experiment acts in: ``env_id`` with ``kwargs``,
    and optionally a ``sweep`` of its options (and of ``env_id`` itself: ``env_id =
    ["Hopper-v5", "Walker2d-v5"]``), each point of which is one environment."""

    model_config = ConfigDict(extra="forbid")

    env_id: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("sweep")
    @classmethod
    def _valid_points(
        cls, sweep: dict[str, list[Any]], info: ValidationInfo
    ) -> dict[str, list[Any]]:
        """Every point must name its own folder and build the environment (gridworld options
        are checked here, by building each level; other Gymnasium envs check theirs when made)."""
        _non_empty(sweep)
        for key, values in sweep.items():
            labels = [_value_label(v) for v in values]
            repeated = sorted({label for label in labels if labels.count(label) > 1})
            if repeated:
                raise ValueError(
                    f"sweep list {key!r} gives the folder name {key}={repeated[0]} to more than "
                    f"one value ({values}); its values must differ"
                )
        kwargs = info.data.get("kwargs", {})
        both = sorted(set(sweep) & set(kwargs))
        if both:
            raise ValueError(
                f"sweep sets {both}, which kwargs sets too (each point would replace it); "
                "keep one of them (environment.sweep={} drops the sweep)"
            )
        if sweep and "env_id" in info.data:
            for point in grid(sweep):
                options = {k: v for k, v in point.items() if k != "env_id"}
                try:
                    check_env(point.get("env_id", info.data["env_id"]), {**kwargs, **options})
                except ValueError as err:
                    raise ValueError(f"environment point {env_point_name(point)}: {err}") from None
        return sweep

    def points(self) -> list[dict[str, Any]]:
        """The environment points, each the options its sweep sets (``[{}]`` without one)."""
        return grid(self.sweep)

    def env_id_at(self, point: dict[str, Any]) -> str:
        """The environment id at one of its points."""
        return point.get("env_id", self.env_id)

    def kwargs_at(self, point: dict[str, Any]) -> dict[str, Any]:
        """The environment's options at one of its points."""
        return {**self.kwargs, **{k: v for k, v in point.items() if k != "env_id"}}


def _without_environment(recipe: type[BaseModel], doc: str) -> type[BaseModel]:
    """A model of ``recipe``'s fields other than the environment, which the experiment sets,
    and a ``sweep`` of those fields: every point of it is one more dataset, in which every
    environment point runs again (``sweep = { quality = ["medium", "medium-replay"] }``)."""
    fields = {
        name: (info.annotation, info)
        for name, info in recipe.model_fields.items()
        if name not in ("env_id", "env_kwargs")
    }

    def valid_sweep(cls: type[BaseModel], sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        _non_empty(sweep)
        unknown = sorted(set(sweep) - set(fields))
        if unknown:
            raise ValueError(f"sweep names {unknown}, which are not fields of {recipe.__name__}")
        return sweep

    return create_model(
        f"{recipe.__name__.removesuffix('Recipe')}Spec",
        __config__=ConfigDict(extra="forbid"),
        __doc__=doc,
        __validators__={"_valid_sweep": field_validator("sweep")(valid_sweep)},
        sweep=(dict[str, list[Any]], Field(default_factory=dict)),
        **fields,
    )


# [dataset]: scripted demonstrators, or a collect-rl dataset (``source = "collect-rl"``)
DatasetSpec = recipe_union(
    _without_environment(DatasetRecipe, "Scripted demonstrations: DatasetRecipe's fields."),
    _without_environment(RLDatasetRecipe, "A collect-rl dataset: RLDatasetRecipe's fields."),
)


class AgentSpec(BaseModel):
    """One agent to compare: a kind, config values and an optional sweep: a grid, or a list
    of grids whose union is run (``[{strategy = [...]}, {strategy = [...], entropy = [false]}]``
    varies the strategy at the default controls and, separately, turns entropy off)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str
    config: dict[str, Any] = Field(default_factory=dict)
    sweep: Sweep = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _readable_name(cls, name: str) -> str:
        if not NAME.match(name):
            raise ValueError(
                f"{name!r} must start with a letter or digit and hold only letters, digits, "
                "'_', '.' and '-' (it names folders)"
            )
        return name

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        registry.get(kind)
        return kind

    _non_empty_lists = field_validator("sweep")(_non_empty_sweep)

    def points(self) -> list[dict[str, Any]]:
        """The sweep points of this agent, one per variant (``[{}]`` without a sweep)."""
        return grid(self.sweep)

    @model_validator(mode="after")
    def _no_reserved_keys(self) -> AgentSpec:
        swept = [set(t) for t in (self.sweep if isinstance(self.sweep, list) else [self.sweep])]
        for table, keys in (("config", set(self.config)), ("sweep", set().union(*swept))):
            reserved = sorted(set(RESERVED_KEYS) & keys)
            if reserved:
                raise ValueError(
                    f"{table} sets {reserved}, which the experiment sets for every agent "
                    "([environment], [dataset], seeds)"
                )
        return self


def _ray_quantity(value: float | None) -> float | None:
    """Ray takes fractions of one CPU or GPU, or whole numbers above one."""
    if value is not None and value > 1 and not float(value).is_integer():
        raise ValueError(f"{value} must be a whole number when above 1 (Ray's rule)")
    return value


class KindResources(BaseModel):
    """``[resources.<kind>]``: what runs of one agent kind reserve instead (unset: the
    experiment's value)."""

    model_config = ConfigDict(extra="forbid")

    cpus: float | None = Field(None, gt=0)
    gpus: float | None = Field(None, ge=0)

    _whole_above_one = field_validator("cpus", "gpus")(_ray_quantity)


class ResourcesSpec(BaseModel):
    """``[resources]``: what each run reserves on a Ray cluster (``--backend ray``), so that
    Ray places as many runs on a node as fit; a table per agent kind overrides it
    (``[resources.odt]``, ``gpus = 1``). A run given a GPU computes on it (device ``auto``);
    a run given none computes on CPU. The local pool ignores this table."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, KindResources] = Field(init=False)

    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)

    _whole_above_one = field_validator("cpus", "gpus")(_ray_quantity)

    @model_validator(mode="before")
    @classmethod
    def _kind_tables(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if key not in cls.model_fields and not isinstance(value, dict):
                    raise ValueError(
                        f"unknown key {key!r} ([resources] takes cpus, gpus and a table per "
                        f"agent kind){did_you_mean(key, list(cls.model_fields))}"
                    )
        return data

    @model_validator(mode="after")
    def _known_kinds(self) -> ResourcesSpec:
        for kind in self.model_extra or {}:
            registry.get(kind)
        return self

    def for_kind(self, kind: str) -> tuple[float, float]:
        """``(cpus, gpus)`` that one run of ``kind`` reserves."""
        own = (self.model_extra or {}).get(kind, KindResources())
        return (
            self.cpus if own.cpus is None else own.cpus,
            self.gpus if own.gpus is None else own.gpus,
        )


REFERENCE = re.compile(r"^@([A-Za-z0-9][A-Za-z0-9_.-]*)$")


def _references(value: Any) -> set[str]:
    """Agent names referred to as ``"@name"`` anywhere inside a config value."""
    if isinstance(value, str):
        match = REFERENCE.match(value)
        return {match[1]} if match else set()
    if isinstance(value, dict):
        return set().union(set(), *(_references(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(set(), *(_references(v) for v in value))
    return set()


def _resolve(value: Any, paths: dict[str, str]) -> Any:
    """``value`` with every ``"@name"`` replaced by ``paths[name]``."""
    if isinstance(value, str):
        match = REFERENCE.match(value)
        return paths[match[1]] if match else value
    if isinstance(value, dict):
        return {k: _resolve(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, paths) for v in value]
    return value


class ExperimentSpec(BaseModel):
    """A whole experiment file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    environment: EnvironmentSpec
    dataset: DatasetSpec | None = None  # type: ignore[valid-type]
    primary_event: str | None = None
    seeds: list[int] = Field(min_length=1, max_length=MAX_SEEDS)
    common: dict[str, Any] = Field(default_factory=dict)
    budgets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    agents: list[AgentSpec] = Field(min_length=1)
    # [sizes.<name>]: values replacing the file's at that size; ``size``: the one applied
    sizes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    size: str | None = None

    @field_validator("sizes")
    @classmethod
    def _sizes_leave_name(cls, sizes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for size, table in sizes.items():
            if not NAME.match(size):
                raise ValueError(f"size {size!r} must be a readable name (letters, digits, _.-)")
            fixed = sorted({"name", "sizes", "size"} & set(table))
            if fixed:
                raise ValueError(f"size {size!r} sets {fixed}, which no size may change")
        return sizes

    @field_validator("seeds", mode="before")
    @classmethod
    def _count_or_list(cls, seeds: Any) -> Any:
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            if not 1 <= seeds <= MAX_SEEDS:
                raise ValueError(f"a seed count must be from 1 to {MAX_SEEDS}, got {seeds}")
            return list(range(seeds))
        return seeds

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat: {seeds}")
        return seeds

    @field_validator("primary_event")
    @classmethod
    def _known_event(cls, event: str | None, info: ValidationInfo) -> str | None:
        environment = info.data.get("environment")
        if event is not None and environment is not None:
            for point in environment.points():
                check_event(environment.env_id_at(point), event, environment.kwargs_at(point))
        return event

    @field_validator("budgets")
    @classmethod
    def _known_kinds(cls, budgets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for kind in budgets:
            registry.get(kind)
        return budgets

    @model_validator(mode="after")
    def _unique_agents(self) -> ExperimentSpec:
        names = [a.name for a in self.agents]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"agent names repeat: {repeated}")
        reserved = sorted(set(RESERVED_KEYS) & set(self.common))
        if reserved:
            raise ValueError(
                f"common sets {reserved}, which [environment], [dataset] and seeds set"
            )
        agents = {a.name: a for a in self.agents}
        for agent in self.agents:
            for target in sorted(_references([agent.config, agent.sweep])):
                other = agents.get(target)
                if other is None:
                    problem = "is not an agent of this experiment"
                elif other is agent:
                    problem = "is the agent itself"
                elif other.sweep:
                    problem = "has a sweep (a reference needs a single variant)"
                elif _references([other.config, other.sweep]):
                    problem = "refers to another run itself (one level only)"
                else:
                    continue
                raise ValueError(f"agent {agent.name!r} refers to '@{target}', which {problem}")
        return self


def run_relpath(variant: str, seed: int) -> str:
    """Where the run of ``variant`` with ``seed`` lives under the experiment's output folder."""
    return f"{variant}/seed_{seed}"


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: a variant of an agent with one seed, in one environment point."""

    variant: str
    agent: str
    kind: str
    seed: int
    config: dict[str, Any]
    needs: tuple[str, ...] = ()  # relpaths of the runs this one reads (``"@agent"`` values)
    env_point: dict[str, Any] = field(default_factory=dict)  # the options [environment] sweeps

    @property
    def relpath(self) -> str:
        """Where the run lives under the experiment's output folder."""
        return run_relpath(self.variant, self.seed)


# ----------------------------------------------------------------------------- reading


def _key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Line number of every table header and ``key =`` line, by its path in the document.

    Best effort (it does not parse strings): used only to point error messages at a line.
    """
    found: dict[tuple[Any, ...], int] = {}
    table: tuple[Any, ...] = ()
    arrays: dict[tuple[Any, ...], int] = {}

    def split(key: str) -> tuple[str, ...]:
        return tuple(part.strip().strip("\"'") for part in key.split("."))

    def place(parts: tuple[str, ...]) -> tuple[Any, ...]:
        # A sub-table of an array of tables ([agents.config]) belongs to its latest element.
        for cut in range(len(parts), 0, -1):
            if parts[:cut] in arrays:
                return (*parts[:cut], arrays[parts[:cut]], *parts[cut:])
        return parts

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if match := re.match(r"^\[\[\s*(.+?)\s*\]\]", line):
            parts = split(match[1])
            arrays[parts] = arrays.get(parts, -1) + 1
            table = (*parts, arrays[parts])
            found[table] = number
        elif match := re.match(r"^\[\s*(.+?)\s*\]", line):
            table = place(split(match[1]))
            found[table] = number
        elif match := re.match(r"^([A-Za-z0-9_\-.\"' ]+?)\s*=", line):
            found[(*table, *split(match[1]))] = number
    return found


def _line_of(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    for cut in range(len(loc), 0, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None


def did_you_mean(word: str, choices: list[str]) -> str:
    """``"; did you mean 'rounds'?"`` for the closest of ``choices``, else ``""``."""
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) pydantic model that ``loc`` points into, following
    model-typed fields (also inside lists, dicts and unions); [] where the path leaves models."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        nested = [
            t
            for t in (field.annotation, *typing.get_args(field.annotation))
            for t in (t, *typing.get_args(t))
            if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def error_message(model: type[BaseModel], error: Any) -> str:
    """A pydantic error's message, with "did you mean" for an unknown key."""
    if error["type"] == "extra_forbidden":
        loc = tuple(error["loc"])
        return f"unknown key{did_you_mean(loc[-1], _fields_at(model, loc[:-1]))}"
    return error["msg"].removeprefix("Value error, ")


def _format_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<file>"


def sized(data: dict[str, Any], size: str) -> dict[str, Any]:
    """Experiment data with its ``[sizes.<size>]`` table merged in (``size`` recorded)."""
    sizes = data.get("sizes")
    table = sizes.get(size) if isinstance(sizes, dict) else None
    if not isinstance(table, dict):
        known = ", ".join(sizes) if isinstance(sizes, dict) and sizes else "none"
        raise ExperimentError(f"no size {size!r} in the experiment (its sizes: {known})")
    if {"name", "sizes", "size"} & set(table):
        return data  # validation names the key
    return {**_merge(data, table), "size": size}


def parse_experiment(
    text: str,
    source: str = "<experiment>",
    overrides: list[str] | None = None,
    size: str | None = None,
) -> ExperimentSpec:
    """Validate experiment TOML text at ``size`` (its ``[sizes.<size>]`` table merged in;
    None: the file as written), after ``key.path=value`` overrides (as ``--set``).

    Errors name ``source:line``, the field and the problem.
    """
    try:
        data = tomllib.loads(text)
        if size is not None:
            data = sized(data, size)
        data = apply_overrides(data, overrides or [])
    except tomllib.TOMLDecodeError as err:
        raise ExperimentError(f"{source}: not valid TOML: {err}") from None
    except ConfigError as err:
        raise ExperimentError(f"{source}: {err}") from None
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as err:
        lines = _key_lines(text)
        problems = []
        for error in err.errors():
            loc = tuple(error["loc"])
            line = _line_of(lines, loc)
            where = f"{source}:{line}" if line else source
            message = error_message(ExperimentSpec, error)
            problems.append(f"{where}: {_format_loc(loc)}: {message}")
        raise ExperimentError(f"invalid experiment {source}: " + "; ".join(problems)) from None


def builtin_names() -> list[str]:
    """Names of the experiments shipped with ogm."""
    folder = resources.files("ogm.experiments") / "builtin"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_experiment(
    name_or_path: str | Path, overrides: list[str] | None = None, size: str | None = None
) -> tuple[ExperimentSpec, str]:
    """Read an experiment from a file path or a built-in name, at ``size`` (None: as
    written); returns the spec and its text."""
    path = Path(name_or_path)
    if path.is_file():
        text, source = path.read_text(), str(path)
    elif str(name_or_path) in builtin_names():
        file = resources.files("ogm.experiments") / "builtin" / f"{name_or_path}.toml"
        text, source = file.read_text(), f"builtin:{name_or_path}"
    else:
        raise ExperimentError(
            f"{name_or_path!r} is neither an experiment file nor a built-in experiment "
            f"(built-ins: {', '.join(builtin_names())})"
        )
    return parse_experiment(text, source, overrides, size), text


# ----------------------------------------------------------------------------- the grid


def _value_label(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value).lower()
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", text).strip("-")


def _settings(point: dict[str, Any]) -> list[str]:
    return [f"{key.split('.')[-1]}={_value_label(v)}" for key, v in point.items()]


def env_point_name(env_point: dict[str, Any]) -> str:
    """The folder of one environment point, e.g. ``k=3`` or ``k=3__slip=0.1``."""
    return "__".join(_settings(env_point))


def variant_name(agent: str, point: dict[str, Any], env_point: dict[str, Any] | None = None) -> str:
    """A readable folder name for an agent and one sweep point, e.g. ``ogm__demo_fraction=0.5``,
    inside the folder of its environment point when the environment is swept
    (``k=3/ogm__demo_fraction=0.5``)."""
    name = "__".join([agent, *_settings(point)])
    return f"{env_point_name(env_point)}/{name}" if env_point else name


def _merge(values: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """``values`` updated by ``updates``: tables merge key by key, dotted keys reach inside."""
    out = dict(values)
    for key, value in updates.items():
        head, _, rest = key.partition(".")
        if rest:
            value = {rest: value}
        if isinstance(value, dict) and isinstance(out.get(head), dict):
            out[head] = _merge(out[head], value)
        else:
            out[head] = _merge({}, value) if isinstance(value, dict) else value
    return out


def expand(
    spec: ExperimentSpec, source: str = "<experiment>", out: Path | None = None
) -> list[RunSpec]:
    """Every run of the experiment (environment points x dataset points x variants x seeds,
    in that order), each config validated by its kind. A run's ``env_point`` holds the
    environment sweep's settings and the dataset sweep's, the latter as ``dataset.<field>``.

    A config value ``"@name"`` becomes the run directory of agent ``name`` with the same seed
    and environment point (absolute, under ``out``; relative to it when ``out`` is None), and
    the run *needs* that one: the runner runs it first. Errors name the agent, the variant
    and each bad field.
    """
    runs, seen = [], set()
    problems: dict[tuple[str, str], list[str]] = {}  # (agent, problem) -> variants with it
    env_points = [
        {**env_point, **{f"dataset.{k}": v for k, v in data_point.items()}}
        for env_point in spec.environment.points()
        for data_point in (grid(spec.dataset.sweep) if spec.dataset is not None else [{}])
    ]
    for env_point in env_points:
        env_kwargs = spec.environment.kwargs_at(
            {k: v for k, v in env_point.items() if not k.startswith("dataset.")}
        )
        shared: dict[str, Any] = {
            "env_id": spec.environment.env_id_at(env_point),
            "env_kwargs": env_kwargs,
        }
        if spec.dataset is not None:
            recipe = spec.dataset.model_dump(exclude={"sweep"})
            for key, value in env_point.items():
                if key.startswith("dataset."):
                    recipe[key.removeprefix("dataset.")] = value
            shared["dataset"] = {**shared, **recipe}
        for index, agent in enumerate(spec.agents):
            config_cls, _ = registry.get(agent.kind).load()
            base = _merge(_merge(spec.common, spec.budgets.get(agent.kind, {})), agent.config)
            for point in agent.points():
                name = variant_name(agent.name, point, env_point)
                if name in seen:
                    problem = f"  agents[{index}] ({agent.name}): variant name {name} repeats"
                    problems.setdefault((agent.name, problem), [])
                seen.add(name)
                for seed in spec.seeds:
                    needs = {
                        target: run_relpath(variant_name(target, {}, env_point), seed)
                        for target in _references([base, point])
                    }
                    paths = {
                        target: str((out / relpath).resolve()) if out is not None else relpath
                        for target, relpath in needs.items()
                    }
                    data = {**_resolve(_merge(base, point), paths), **shared, "seed": seed}
                    try:
                        config = config_cls.model_validate(data)
                    except ValidationError as err:
                        for error in err.errors():
                            loc = _format_loc(tuple(error["loc"]))
                            problem = (
                                f"  agents[{index}] ({agent.name}): {loc}"
                                f": {error_message(config_cls, error)}"
                            )
                            problems.setdefault((agent.name, problem), []).append(name)
                        break
                    runs.append(
                        RunSpec(
                            variant=name,
                            agent=agent.name,
                            kind=agent.kind,
                            seed=seed,
                            config=config.model_dump(mode="json"),
                            needs=tuple(sorted(needs.values())),
                            env_point=env_point,
                        )
                    )
    if problems:
        variants = {a.name: len(a.points()) * len(env_points) for a in spec.agents}
        lines = []
        for (agent, problem), names in problems.items():
            some = names and len(names) < variants[agent]  # not every variant has it
            lines.append(problem + (f" (variants {', '.join(names)})" if some else ""))
        raise ExperimentError(
            f"invalid agent configs in {source}: " + "; ".join(line.strip() for line in lines)
        )
    return runs


__all__ = [
    "AgentSpec",
    "DatasetSpec",
    "EnvironmentSpec",
    "ExperimentError",
    "ExperimentSpec",
    "RunSpec",
    "builtin_names",
    "did_you_mean",
    "env_point_name",
    "expand",
    "grid",
    "load_experiment",
    "parse_experiment",
    "run_relpath",
    "variant_name",
]
