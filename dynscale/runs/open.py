"""Opening a run: the one place that checks a run's kind, its config's schemas and the data it
is used with, each with one message naming the run and the fix."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..data import Dataset, load_dataset
from ..errors import CheckpointError, DynscaleError
from ..files import note_input
from ..schema import SchemaError, check_fields
from .config import CONFIG, RunConfig
from .kinds import create_model, get_kind
from .store import WEIGHTS, load_state_checked, read_weights

ConfigCheck = Callable[[RunConfig], None]
_CONFIG_CHECKS: list[ConfigCheck] = []


def register_config_check(check: ConfigCheck) -> ConfigCheck:
    """Registers a check every opened config passes (the trainer registers those of the
    training settings and the recipe); it raises ``ValueError`` naming the field."""
    _CONFIG_CHECKS.append(check)
    return check


@dataclass
class Run:
    """An opened run: its directory, model (in eval mode, at full width; None when opened
    without loading), config, and the dataset it was opened with (None: none asked for)."""

    path: Path
    model: nn.Module | None
    config: RunConfig
    dataset: Dataset | None = None

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def metrics(self) -> dict:
        """The final metrics recorded when the run was trained."""
        return self.config.metrics

    @property
    def model_name(self) -> str | None:
        return self.config.model_name

    @property
    def data(self) -> str:
        return self.config.data

    @property
    def profile(self) -> str | list[float] | None:
        return self.config.profile


def check_config(config: RunConfig, source: str) -> None:
    """Checks a config against its kind's section schema, the registered checks (training
    settings, recipe) and the kind's own checks across fields.

    Raises:
        CheckpointError: ``SOURCE: field: problem``, and the fix.
    """
    kind = get_kind(config.kind)
    try:
        if kind.needs_model and config.model is None:
            raise SchemaError("model is missing")
        if kind.section is not None:
            check_fields(kind.section, config.section, "section")
        for check in _CONFIG_CHECKS:
            check(config)
        if kind.check is not None:
            kind.check(config)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{source}: {' '.join(str(e).split())}; the run was edited or damaged: restore its "
                              "config.json or retrain it") from None
    except KeyError as e:
        raise CheckpointError(f"{source}: {e} is missing; the run was edited or damaged: restore its config.json "
                              "or retrain it") from None


def check_data(config: RunConfig, data: Dataset, name: str, own_data: bool = False, what: str = "this command") -> None:
    """Checks that ``data`` fits every network of the run (input channels, size, classes) and,
    with ``own_data``, that it is the run's own dataset.

    Raises:
        DynscaleError: naming the run, both datasets and the fix.
    """
    if own_data and data.name != config.data:
        raise DynscaleError(f"{name} was trained on {config.data}, not {data.name}; {what} uses the run's own "
                            f"data (its held-out split), so leave out --data or give --data {config.data}")
    wanted = {"in_channels": data.in_channels, "input_size": data.input_size, "num_classes": data.num_classes}
    for spec in get_kind(config.kind).model_specs(config):
        model_config = spec.get("config", spec) if isinstance(spec, dict) else {}
        for key, value in wanted.items():
            if key in model_config and model_config[key] != value:
                raise DynscaleError(f"{name} has {key}={model_config[key]} but dataset {data.name} has {value}; "
                                    f"evaluate it with --data shaped like its own ({config.data}), or leave --data "
                                    "out")


def _kind_message(path: Path, have: str, kinds: Sequence[str], what: str) -> str:
    run_kind = get_kind(have)
    wanted = [get_kind(k) for k in kinds]
    makers = " or ".join(dict.fromkeys(k.made_by for k in wanted if k.made_by)) or "another command"
    hint = f"; use it with {run_kind.used_by}" if run_kind.used_by else ""
    return (f"{path} is {run_kind.called}, not {' or '.join(k.called for k in wanted)}: {what} takes runs made "
            f"with {makers}{hint}")


def open_run(path: str | Path, kinds: Sequence[str] | None = None, data: Dataset | str | None = None, *,
             with_data: bool = False, own_data: bool = False, what: str = "this command", load: bool = True,
             datasets: dict[str, Dataset] | None = None) -> Run:
    """Opens a run directory, checking before any work: its kind, its config's schemas (every
    method's section, the training settings, the recipe), the data it is used with, and its
    weights against its config.

    Args:
        path: the run directory.
        kinds: the run kinds the caller takes (None: any).
        data: the dataset (or its name) the run is used with.
        with_data: load the run's own dataset when ``data`` is None.
        own_data: the data must be the run's own dataset (a use of its held-out split).
        what: the command or option the run was given to, for the messages.
        load: build the model and load its weights (False: the config only).
        datasets: loaded datasets by name, shared across several runs.

    Returns:
        The run, its model in eval mode.

    Raises:
        CheckpointError / DynscaleError: one line naming the run and the fix.
    """
    path = Path(path)
    config = RunConfig.read(path)
    if kinds is not None and config.kind not in kinds:
        raise CheckpointError(_kind_message(path, config.kind, kinds, what))
    check_config(config, str(path / CONFIG))
    dataset = None
    if data is not None or with_data:
        if isinstance(data, Dataset):
            dataset = data
        else:
            name = data or config.data
            cache = datasets if datasets is not None else {}
            dataset = cache[name] if name in cache else cache.setdefault(name, load_dataset(name))
        check_data(config, dataset, str(path), own_data, what)
    model = None
    if load:
        try:
            model = create_model(config)
        except CheckpointError as e:
            raise CheckpointError(f"{path / CONFIG}: {e}") from None
        custom = any(spec.get("config", {}).get("profile") == "custom" for spec in get_kind(config.kind)
                     .model_specs(config) if isinstance(spec, dict))
        load_state_checked(model, read_weights(path / WEIGHTS), str(path / WEIGHTS), check_profile=not custom)
        note_input(path, model)  # while the model is in use, no output replaces the run
        model.eval()
    return Run(path, model, config, dataset)


def open_runs(paths: Sequence[str | Path], kinds: Sequence[str] | None = None, data: Dataset | str | None = None,
              **options) -> list[Run]:
    """Opens several runs with :func:`open_run`, every check made for all of them before any
    is used, each dataset loaded once."""
    datasets: dict[str, Dataset] = {}
    return [open_run(p, kinds, data, datasets=datasets, **options) for p in paths]


def load_run(directory: str | Path) -> Run:
    """Loads a run directory of any kind (:func:`open_run` without a kind or data).

    Raises:
        CheckpointError: if anything is missing, truncated, foreign or inconsistent.
    """
    return open_run(directory)
