"""Clear errors for Hydra plugins that a command line asks for but that are not installed.

Hydra would report a missing ``hydra/launcher/joblib`` option; the user needs the name of the package.
"""

from __future__ import annotations

import importlib.util
import sys

#: config choice -> (module that provides it, package to install)
PLUGINS = {
    ("launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    ("launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    ("launcher", "slurm"): ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    # every search (conf/hparams_search/*): hsvae's own sweeper, on Optuna
    ("hparams_search", "*"): ("optuna", "optuna"),
}
#: the extra of pyproject.toml that installs each package
EXTRAS = {"optuna": "search"}


def missing_plugin(argv: list[str]) -> str | None:
    """A message for the first override in ``argv`` that needs an uninstalled plugin, or None."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep:
            continue
        for choice in value.split(","):
            choice = choice.strip()
            plugin = PLUGINS.get((key, choice)) or (PLUGINS.get((key, "*")) if choice != "null" else None)
            if plugin is None:
                continue
            module, package = plugin
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                return (f"{key}={choice} needs the package '{package}', which is not installed: "
                        f"pip install {package}   (or: pip install -e '.[{EXTRAS.get(package, 'launchers')}]')")
    return None


def exit_if_plugin_missing() -> None:
    message = missing_plugin(sys.argv[1:])
    if message:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)
