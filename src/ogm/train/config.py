"""Configs shared by every agent, and loading them from TOML with ``--set`` overrides."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ogm.data.recipe import DatasetSource
from ogm.limits import MAX_ENVS, MAX_EVAL_EPISODES, MAX_STEPS, STRICT

if TYPE_CHECKING:
    import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

C = TypeVar("C", bound=BaseModel)


class ConfigError(ValueError):
    """A config that does not validate, with every offending field named."""


class CommonConfig(BaseModel):
    """What every agent needs: where it acts, on what data, with which seed and device."""

    model_config = STRICT

    env_id: str = "ogm/TomatoWatering-v0"
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    dataset: DatasetSource | None = None  # type: ignore[valid-type]
    seed: int = Field(0, ge=0, lt=2**32)  # training seeds stay apart from evaluation's
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    num_envs: int = Field(16, gt=0, le=MAX_ENVS)
    # The evaluation protocol (ogm.train.evaluation): episodes per mode at every evaluation
    # point, and the environment steps of training between points (agents that train in
    # the environment; the others are evaluated once their training ends).
    eval_episodes: int = Field(20, ge=0, le=MAX_EVAL_EPISODES)
    eval_every: int = Field(10_000, gt=0, le=MAX_STEPS)
    # Decision Transformer arithmetic: "auto" is bfloat16 autocast where the device computes
    # bfloat16 natively (CPUs with AVX512-BF16 or AMX, CUDA GPUs with bf16), else float32
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    @field_validator("env_id")
    @classmethod
    def _known_env(cls, env_id: str) -> str:
        from ogm.envs import check_env

        check_env(env_id)
        return env_id

    @field_validator("env_kwargs")
    @classmethod
    def _known_options(cls, env_kwargs: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Gridworld options are checked here, by building the level (cheap); another
        Gymnasium env checks its own options when it is made."""
        from ogm.envs import check_env

        if "env_id" in info.data:
            check_env(info.data["env_id"], env_kwargs)
        return env_kwargs

    @field_validator("device")
    @classmethod
    def _available_device(cls, device: str) -> str:
        """A CUDA device must exist here: a run fails at once, not after its first steps."""
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(
                    f"{device!r} needs a CUDA GPU, and this torch ({torch.__version__}) finds "
                    "none; use 'cpu' or 'auto'"
                )
            index = int(device.partition(":")[2] or 0)
            if index >= torch.cuda.device_count():
                raise ValueError(
                    f"{device!r}: this machine has CUDA devices 0..{torch.cuda.device_count() - 1}"
                )
        return device

    def torch_device(self) -> torch.device:
        """The device to compute on: ``auto`` picks CUDA when present, else CPU."""
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_precision(self) -> str:
        """``"bf16"`` or ``"fp32"``: ``precision`` with ``auto`` resolved for this device."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if native_bfloat16(self.torch_device()) else "fp32"


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matmuls natively. Emulated bfloat16 (oneDNN on
    older AVX-512 CPUs) is slower than float32, so only CPUs that list AVX512-BF16 or
    AMX-BF16 (x86) or BF16 (Arm) among their features count."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def _checkpoint_folder(path: str) -> str:
    """``path`` unless it names a file: a run starts from a run directory or a checkpoint
    folder, and a file there (a dataset's metadata.json, say) is a mistake to name at once."""
    if Path(path).is_file():
        raise ValueError(
            f"{path} is a file; give a run directory or one of its checkpoint folders "
            "(checkpoints/step_<n>)"
        )
    return path


# A config field naming a run directory or a checkpoint folder to start from
RunPath = Annotated[str, AfterValidator(_checkpoint_folder)]


THREADS_VARIABLE = "OGM_THREADS"


def torch_threads() -> int:
    """Torch threads per run: ``$OGM_THREADS``, default 1.

    One thread is the right default for ogm's small models on a shared CPU: two runs with
    one thread each beat one run with two threads, and a two-thread run on a busy machine
    slows down several times. Every run gets the same count, whether it runs alone or in a
    pool, so the same seed gives the same numbers (float reductions depend on the count).
    """
    raw = os.environ.get(THREADS_VARIABLE, "1")
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if not 1 <= threads <= 1024:
        raise ConfigError(f"{THREADS_VARIABLE} must be an integer from 1 to 1024, got {raw!r}")
    return threads


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into a key path and a TOML-parsed value (strings left as is)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def parse_keywords(items: list[str]) -> dict[str, Any]:
    """``["variant=sushi", "level=1"]`` -> ``{"variant": "sushi", "level": 1}`` (flat keys)."""
    return apply_overrides({}, items)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return ``data`` with each ``key.path=value`` override set (nested tables created)."""
    data = dict(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[path[-1]] = value
    return data


def describe_errors(err: ValidationError, prefix: str = "") -> str:
    """Every error of ``err`` on one line: ``field.path: what is wrong (got value)``, each
    field path after ``prefix``, separated by ``;``."""
    parts = []
    for e in err.errors():
        keys = [str(p) for p in ([prefix] if prefix else []) + list(e["loc"])]
        where = ".".join(k if k.isprintable() and " " not in k else repr(k) for k in keys)
        message = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if e["type"] not in ("extra_forbidden", "missing", "value_error", "assertion_error"):
            shown = repr(e["input"])
            message += f" (got {shown if len(shown) <= 40 else shown[:37] + '...'})"
        message = " ".join(message.split())
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def validate_config(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
    """Validate ``data`` as ``cls``; the one-line error names ``source`` and every field."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid {source} for {cls.__name__}: {describe_errors(err)}") from None


def load_config(
    cls: type[C], path: Path | str | None = None, overrides: list[str] | None = None
) -> C:
    """Build a ``cls`` config from an optional TOML file plus ``key=value`` overrides."""
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from None
        except OSError as err:
            raise ConfigError(f"config file {path} cannot be read: {err.strerror}") from None
        source = str(path)
    return validate_config(cls, apply_overrides(data, overrides or []), source)
