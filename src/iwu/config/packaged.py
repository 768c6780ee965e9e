"""The configs that ship inside the package (`iwu/configs`): the demo, the paper's, the ablations', the examples.

Commands that take a config take a file or one of these by name: `iwu train paper/acdc_ensemble` (with or
without `.yaml`, and with the checkout's `configs/` prefix too, so the README's commands run from anywhere).
A file that exists wins over a name, so a user's own `paper/acdc_ensemble.yaml` is read instead.
"""

from importlib import resources
from pathlib import Path

from iwu.errors import UserError
from iwu.util.suggest import did_you_mean

SUFFIX = ".yaml"
LIST_HINT = "`iwu train --list-configs` lists them"


def packaged_configs_dir() -> Path:
    # A folder on disk, not a resource stream: `base:` links between the files are followed as paths.
    return Path(str(resources.files("iwu") / "configs"))


def packaged_config_names() -> list[str]:
    """Every packaged config by the name that finds it, e.g. `paper/acdc_ensemble`."""
    root = packaged_configs_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob(f"*{SUFFIX}"))


def find_config(text) -> Path:
    """The file `text` names: an existing path as it is, else the packaged config of that name."""
    path = Path(text)
    if path.exists() or path.is_absolute():  # names are relative; reading gives the precise error
        return path
    name = str(text).removeprefix("configs/").removesuffix(SUFFIX)
    names = packaged_config_names()
    if name in names:
        return packaged_configs_dir() / f"{name}{SUFFIX}"
    # a stricter cutoff than the package's: at 0.6 any name in the same folder would be suggested
    hint = did_you_mean(name, names, "did you mean {}? ", n=3, join=", ", cutoff=0.75)
    raise UserError(f"{text}: no such config file, nor a config that ships with iwu; {hint}{LIST_HINT}")
