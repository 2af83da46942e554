"""A search's space in Hydra's sweep syntax, read into Optuna distributions.

``hydra.sweeper.params`` and the command line's sweeps (``name=<sweep>``) use Hydra's override grammar:

===========================================  ==========================================================
``choice(a, b, c)`` (or ``a,b,c``)           categorical over the values (numbers, strings, ``'[256,128]'``)
``range(start, stop[, step])``               integers ``start, start + step, ... < stop`` (floats: a stepped float)
``interval(low, high)``                      a float in [low, high]
``int(interval(low, high))``                 an integer in [low, high]
``tag(log, interval(...))``                  the same, sampled log-uniformly (``tag(log, int(interval(...)))``)
a plain value                                fixed for every trial
===========================================  ==========================================================

A later entry for the same name wins (the command line over the config).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from hsvae.utils.errors import SearchSpaceError


def distribution_of(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (:class:`SearchSpaceError` for one Optuna cannot sample)."""
    name = override.get_key_element()
    sweep = override.value()
    log = "log" in getattr(sweep, "tags", set())
    if isinstance(sweep, ChoiceSweep):
        if log:
            raise SearchSpaceError(f"{name}: tag(log, ...) applies to an interval or a range, not to choice(...)")
        choices = tuple(_categorical(name, value) for value in sweep.list)
        if not choices:
            raise SearchSpaceError(f"{name}: an empty choice()")
        return CategoricalDistribution(choices)
    if isinstance(sweep, RangeSweep):
        values = list(_range_values(sweep))
        if not values:
            raise SearchSpaceError(f"{name}: range({sweep.start}, {sweep.stop}, {sweep.step}) is empty")
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return IntDistribution(values[0], values[-1], log=log, step=1 if log else abs(sweep.step))
        if log:
            raise SearchSpaceError(f"{name}: tag(log, range(...)) needs integers; use tag(log, interval(...))")
        step = abs(float(sweep.step))
        return FloatDistribution(float(values[0]), float(values[-1]), step=step)
    if isinstance(sweep, IntervalSweep):
        low, high = sweep.start, sweep.end
        if not low < high:
            raise SearchSpaceError(f"{name}: interval({low}, {high}) needs low < high")
        if log and low <= 0:
            raise SearchSpaceError(f"{name}: tag(log, interval({low}, {high})) needs low > 0")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise SearchSpaceError(f"{name}: {override.input_line!r} is not a search Optuna can sample (choice, range, "
                           "interval)")


def _categorical(name: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise SearchSpaceError(f"{name}: choice values must be numbers or strings; quote a list or a dict "
                           f"(choice('[256,128]', ...)), got {value!r}")


def _range_values(sweep: RangeSweep) -> list:
    start, stop, step = sweep.start, sweep.stop, sweep.step
    if step == 0:
        return []
    count = max(0, math.ceil((stop - start) / step))
    return [start + i * step for i in range(count)]


def parse(items: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(distributions, fixed overrides) of a search's ``name=value`` items; a later item for a name wins."""
    parser = OverridesParser.create()
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parser.parse_overrides(list(items)):
        name = override.get_key_element()
        distributions.pop(name, None)
        fixed.pop(name, None)
        if override.is_sweep_override():
            distributions[name] = distribution_of(override)
        else:
            fixed[name] = override.input_line.split("=", 1)[1] if "=" in override.input_line else ""
    return distributions, fixed


def search_space(params: Any, arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """The space of ``hydra.sweeper.params`` then the command line's arguments."""
    return parse([f"{k!s}={v}" for k, v in (params or {}).items()] + list(arguments))


def as_override(name: str, value: Any) -> str:
    """``name=value`` as Hydra reads it back (floats in full precision)."""
    return f"{name}={value!r}" if isinstance(value, float) else f"{name}={value}"


# -- checked before the first trial ----------------------------------------------------------------------
def probe_overrides(distributions: dict[str, BaseDistribution], fixed: dict[str, str]) -> list[list[str]]:
    """Override lists that, composed one after the other, use every categorical choice and both ends of every
    numeric range at least once (as many lists as the largest choice has values, at least two)."""
    def values(distribution: BaseDistribution) -> list:
        if isinstance(distribution, CategoricalDistribution):
            return list(distribution.choices)
        return [distribution.low, distribution.high]

    per_param = {name: values(d) for name, d in distributions.items()}
    rounds = max([2, *(len(v) for v in per_param.values())])
    fixed_part = [f"{name}={value}" for name, value in fixed.items()]
    return [[*fixed_part, *(as_override(name, vals[i % len(vals)]) for name, vals in per_param.items())]
            for i in range(rounds)]


def check_search_space(compose: Callable[[list[str]], Any], distributions: dict[str, BaseDistribution],
                       fixed: dict[str, str]) -> None:
    """Compose the config with every value of the search space; raise :class:`SearchSpaceError` naming each
    parameter (or value) that does not compose."""
    for overrides in probe_overrides(distributions, fixed):
        try:
            compose(overrides)
        except Exception as err:  # noqa: BLE001 -- Hydra raises several types; the message is what matters
            fixed_part = [f"{name}={value}" for name, value in fixed.items()]
            culprits = []
            for item in overrides[len(fixed_part):]:
                try:
                    compose([*fixed_part, item])
                except Exception:  # noqa: BLE001
                    culprits.append(item)
            named = ", ".join(repr(c.split("=", 1)[0]) for c in culprits) or "(their combination)"
            raise SearchSpaceError(
                f"the search space (hydra.sweeper.params and the command line's sweeps) cannot be composed with "
                f"the config: {'; '.join(culprits) or ' '.join(overrides)} -- unknown parameter or value {named}. "
                f"Hydra says: {err}"
            ) from None  # Hydra's message is in ours; its traceback would bury it


def describe(distribution: BaseDistribution) -> dict[str, Any]:
    """``{"choices": [...]}`` or ``{"low", "high", "log", "int"}`` (search.yaml, summarize_search)."""
    if isinstance(distribution, CategoricalDistribution):
        return {"choices": list(distribution.choices)}
    described = {"low": distribution.low, "high": distribution.high, "log": bool(distribution.log),
                 "int": isinstance(distribution, IntDistribution)}
    if getattr(distribution, "step", None) not in (None, 1):
        described["step"] = distribution.step
    return described
