"""Which config file set each protocol value of a run: the lines under "set by" in the start banner
(hsvae/cli/banner.py shows them), e.g. ``trainer.max_epochs=200 (from task=link_prediction, via dataset=cora)``.

Hydra records which option of each group a run chose (``hydra.runtime.choices``), not which file set a key. So
the defaults list is computed again from the run's overrides (Hydra's own composition order: a later entry wins,
the command line last) and read from the end: a key's source is the last file of that list that sets it (each
file read with OmegaConf, at its package), unless an override of the command line (or of a sweep's job) sets it.
A group's option (``model``) was chosen by the override that won (an ``override /model: vgae`` in a file's
defaults list, or the command line), else by the default of the file that lists the group. "via" names the
option of train.yaml's own defaults list that brought the file in (a dataset's task).

A tenth of a second or two (the defaults list); nothing here may fail a run: a source that cannot be found is
"?".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hsvae.cli import CONFIG_DIR
from hsvae.cli.resume import override_key

_UNKNOWN = "?"
_ABSENT = object()

#: The protocol values whose source the banner names: the model, the latent size, the stopping rule, the
#: selection metric. (Early stopping's monitor and patience only when it is on.)
PROTOCOL_KEYS = (
    "latent.dim",
    "trainer.max_epochs",
    "callbacks.early_stopping",
    "callbacks.early_stopping.monitor",
    "callbacks.early_stopping.patience",
    "callbacks.model_checkpoint.monitor",
)


@lru_cache(maxsize=256)
def _file_content(path: str) -> DictConfig | None:
    """A config file's own keys (its defaults list dropped), or None when it cannot be read."""
    try:
        content = OmegaConf.load(path)
    except Exception:
        return None
    if not isinstance(content, DictConfig):
        return None
    content.pop("defaults", None)
    return content


def _relative(key: str, package: str) -> str | None:
    """``key`` relative to a file's package ("" = global), or None when the file cannot set it."""
    if not package:
        return key
    if key == package:
        return ""
    return key[len(package) + 1:] if key.startswith(package + ".") else None


def _sets(content: DictConfig, relative: str) -> bool:
    if relative == "":
        return True  # the file is the whole node
    try:
        return OmegaConf.select(content, relative, default=_ABSENT, throw_on_missing=False) is not _ABSENT
    except Exception:
        return False


class Provenance:
    """The sources of a composed run's values, from its choices, overrides and the defaults list Hydra builds."""

    def __init__(self, defaults: Sequence, overrides_meta: Mapping, choices: Mapping[str, str | None],
                 task_overrides: Sequence[str], config_dirs: Sequence[str], primary: str, multirun: bool):
        self.defaults = [d for d in defaults if not str(d.config_path or "").startswith("hydra/")
                         and d.config_path not in (None, "hydra/config")]
        self.meta = overrides_meta
        self.task_overrides = [str(o) for o in task_overrides]
        self.config_dirs = list(config_dirs)
        self.primary = primary
        self.override_label = "sweep override" if multirun else "command line"
        self.groups = set(choices)
        self.labels = {f"{group.split('@')[0]}/{option}": f"{group}={option}"
                       for group, option in choices.items() if isinstance(option, str)}
        self.parents = {d.config_path: d.parent for d in self.defaults}

    # -- naming a file -----------------------------------------------------------------------------------------
    def label(self, config_path: str) -> str:
        if config_path == self.primary:
            return f"{self.primary}.yaml"
        return self.labels.get(config_path, f"{config_path}.yaml")

    def _top(self, config_path: str) -> str:
        """The entry of the primary config's defaults list that brought ``config_path`` in."""
        seen = set()
        while self.parents.get(config_path) not in (None, self.primary) and config_path not in seen:
            seen.add(config_path)
            config_path = self.parents[config_path]
        return config_path

    def source(self, config_path: str) -> str:
        text = f"from {self.label(config_path)}"
        top = self._top(config_path)
        if top != config_path and top != self.primary:
            text += f", via {self.label(top)}"
        return text

    # -- sources -----------------------------------------------------------------------------------------------
    def _command_line(self, key: str) -> str | None:
        for item in reversed(self.task_overrides):
            name = override_key(item).strip()
            if name.split("@")[0] in self.groups or name in self.groups:
                continue  # a group's option: its file is in the defaults list
            if key == name or key.startswith(name + "."):
                return item
        return None

    def of_key(self, key: str) -> str:
        """Where ``key``'s value comes from, e.g. ``from task=link_prediction, via dataset=cora``."""
        if self._command_line(key) is not None:
            return self.override_label
        for default in reversed(self.defaults):
            relative = _relative(key, str(default.package or ""))
            if relative is None:
                continue
            content = self._content(default.config_path)
            if content is not None and _sets(content, relative):
                return self.source(default.config_path)
        return "not set by any config"

    def of_group(self, group: str) -> str:
        """Where the option of ``group`` was chosen."""
        meta = self.meta.get(group)
        if meta is not None:
            if meta.external_override:
                return self.override_label
            if meta.containing_config_path:
                return self.source(meta.containing_config_path)
        for default in self.defaults:
            if getattr(default, "override_key", None) == group and default.parent:
                if default.parent == self.primary:
                    return f"default of {self.primary}.yaml"
                return self.source(default.parent)
        return _UNKNOWN

    def _content(self, config_path: str) -> DictConfig | None:
        for folder in self.config_dirs:
            path = Path(folder) / f"{config_path}.yaml"
            if path.is_file():
                return _file_content(str(path))
        return None


def _config_dirs(search_path) -> list[str]:
    """The file-system folders of a config search path (pkg:// sources are Hydra's own configs)."""
    paths = [str(element.path) for element in search_path.get_path()]
    return [path.removeprefix("file://") for path in paths if path.startswith("file://") or "://" not in path]


def _search_path():
    """The running app's config search path, or this package's (conf/, and the search-path plugins')."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return GlobalHydra.instance().config_loader().get_search_path()
    from hydra._internal.utils import create_config_search_path

    return create_config_search_path(CONFIG_DIR)


def compute(choices: Mapping[str, str | None], task_overrides: Sequence[str], multirun: bool = False,
            config_name: str = "train") -> Provenance:
    """The provenance of the run composed from ``config_name`` and ``task_overrides`` (as Hydra recorded them):
    Hydra's defaults list without its own ``hydra/`` groups (about 0.15 s)."""
    from hydra._internal.config_repository import CachingConfigRepository, ConfigRepository
    from hydra._internal.defaults_list import create_defaults_list
    from hydra.core.override_parser.overrides_parser import OverridesParser

    search_path = _search_path()
    repo = CachingConfigRepository(ConfigRepository(config_search_path=search_path))
    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    defaults = create_defaults_list(repo=repo, config_name=config_name, overrides_list=parsed, prepend_hydra=False,
                                    skip_missing=False)
    return Provenance(defaults.defaults, defaults.overrides.override_metadata, choices, task_overrides,
                      _config_dirs(search_path), config_name, multirun)


def _value(cfg: DictConfig, key: str):
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    except Exception:
        return _UNKNOWN


def _show(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, DictConfig):
        return "{...}"
    return str(value)


def _is_on(node) -> bool:
    return isinstance(node, DictConfig) and bool(node.get("_target_"))


def protocol_lines(cfg: DictConfig, choices: Mapping[str, str | None], task_overrides: Sequence[str],
                   multirun: bool = False) -> list[str]:
    """``key=value (source)`` for the model and each protocol value of ``cfg`` (see :data:`PROTOCOL_KEYS`); a
    source that cannot be found is "?", and so is every source when the defaults list cannot be computed."""
    try:
        provenance = compute(choices, task_overrides, multirun)
    except Exception:
        provenance = None

    def where(method: str, name: str) -> str:
        try:
            return getattr(provenance, method)(name)
        except Exception:  # (no provenance at all included)
            return _UNKNOWN

    lines = [f"model={choices.get('model') or _UNKNOWN} ({where('of_group', 'model')})"]
    stopping = _value(cfg, "callbacks.early_stopping")
    for key in PROTOCOL_KEYS:
        value = _value(cfg, key)
        if key == "callbacks.early_stopping":
            if _is_on(stopping):
                continue  # on: its monitor and patience say where it comes from
            if isinstance(stopping, DictConfig):  # settings without a callback (e.g. callbacks=none): off
                lines.append(f"callbacks.early_stopping: no _target_ (callbacks={choices.get('callbacks')}, "
                             f"{where('of_group', 'callbacks')})")
                continue
            value = None  # null or absent: no early stopping
        elif key.startswith("callbacks.early_stopping.") and not _is_on(stopping):
            continue
        if value is _ABSENT:
            continue
        lines.append(f"{key}={_show(value)} ({where('of_key', key)})")
    return lines
