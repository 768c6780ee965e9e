"""The run configuration: `schema` (the dataclasses, reading a YAML file with its bases and overrides, the
checks), `doc` (what each key means, `iwu config --show`), `packaged` (the configs that ship in
`iwu/configs`, found by name)."""

from iwu.config.schema import RunConfig, load_config, save_config

__all__ = ["RunConfig", "load_config", "save_config"]
