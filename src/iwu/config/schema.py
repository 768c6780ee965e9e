"""The run configuration: nested dataclasses that mirror constructor arguments.

A run is described by one YAML file plus dotted `key=value` overrides from the
command line. The defaults are the paper's hyper-parameters (docs/method.md, section 4),
so a config file only says what differs. A file may start from another with
`base: other.yaml` (relative to the file); mappings merge key by key and lists
are replaced whole, which is how the paper configs share their settings.

Every mistake (an unknown key, a wrong type, a bad value, an unreadable file)
is a one-line `UserError` that names the dotted key or the file.
"""

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from iwu.util.bounded import MAX_DEPTH, MAX_NAME, check_bounded
from iwu.data.config import DataConfig, check_data
from iwu.errors import UserError
from iwu.util.atomic_files import atomic_write_bytes
from iwu.util.suggest import close_matches, did_you_mean
from iwu.config.packaged import LIST_HINT, find_config


@dataclass
class MemberConfig:
    name: str  # a registered model, smp:<Arch> or torchvision:<builder> (iwu.models)
    lr: float  # the head's rate; the backbone gets optim.backbone_lr_scale x it
    args: dict = field(default_factory=dict)  # keyword arguments of its builder


@dataclass
class ModelConfig:
    output_stride: int = 16  # for the builders that take one (DeepLab: 8 or 16)
    pretrained: bool = True  # ImageNet weights for the backbones, from the local caches (iwu weights)
    bn_momentum: float = 0.01  # momentum of the backbones' batch-norm running statistics
    init_from: str | None = None  # a run directory, ensemble checkpoint or member .pt to start from
    init_strict: bool = False  # refuse tensors of other shapes (a head for other classes) instead of re-initialising


@dataclass
class OptimConfig:
    weight_decay: float = 1e-4  # Adam's L2 penalty
    backbone_lr_scale: float = 0.1  # the backbone's rate as a fraction of its member's lr
    poly_power: float = 0.9  # rate x (1 - step / steps)^power over the run
    min_lr: float = 1e-6  # floor of the poly schedule


@dataclass
class LossConfig:
    normalize: Literal["all", "valid"] = "all"  # mean over all pixels (ignored add 0) or labeled ones
    focal_gamma: float = 2.0  # focusing exponent of mode focal
    connectivity: Literal[4, 8] = 8  # pixel neighbours that join an instance (a connected region of one class)
    backend: Literal["auto", "cc3d", "torch"] = "auto"  # instances by cc3d (CPU) or torch (any device)
    masks_dir: str | None = None  # the folder of `iwu masks`, for mode offline_masks
    exponent: float | None = None  # weights (1 + U)^exponent; default: the mode's (2 the paper's, 1 U-CE's)
    uncertainty: Literal["entropy", "mutual_information", "predicted_std"] = "entropy"  # U: the members' disagreement
    source: Literal["ensemble", "mc_dropout"] = "ensemble"  # the members, or each member's dropout passes
    mc_samples: int = 10  # stochastic passes per member with source mc_dropout
    dice_weight: float = 0.5  # ce_dice: (1 - w) CE + w Dice, as the published hybrid
    ohem_threshold: float = 0.7  # ohem: keep the labeled pixels whose true class has a probability below this
    ohem_min_kept: int | None = None  # ohem: and at least this many of the hardest; null: a share of the batch's pixels
    lovasz_weight: float = 0.5  # ce_lovasz: (1 - w) CE + w Lovasz-softmax
    class_weights: Literal["inverse", "median_frequency", "effective_number"] = "inverse"  # class_weighted's weights
    cb_beta: float = 0.9999  # class_weights effective_number: Cui et al.'s beta, in [0, 1)


@dataclass
class TrainerConfig:
    max_epochs: int = 60  # passes over the training set, -1: no limit; the first bound reached ends the run
    max_steps: int = -1  # training iterations, -1: no limit
    precision: str | int = "32-true"  # as Lightning takes it: 32, "bf16-mixed", ...
    accelerator: str = "auto"  # cpu, gpu, ... as Lightning takes it; auto: a GPU when present
    devices: int | str | list = "auto"  # how many, or which ([0, 1]); auto: all of the accelerator's
    strategy: str = "auto"  # as Lightning takes it, e.g. ddp for several GPUs or nodes
    num_nodes: int = 1  # machines of a DDP run
    channels_last: bool = False  # NHWC memory layout (faster convolutions with mixed precision)
    compile: bool = False  # torch.compile each member
    deterministic: bool = False  # deterministic algorithms only (same numbers, slower)
    log_every_n_steps: int = 10  # training metrics logged every N steps
    verbose: bool = False  # Lightning's own messages too: devices found, tips, the model summary
    sync_batchnorm: bool = False  # under DDP: batch statistics over all ranks (for 1-2 images per GPU)


@dataclass
class SlurmConfig:
    """Where `iwu sweep --launcher slurm` submits its runs, one job each (its options override these)."""

    partition: str | None = None  # sbatch --partition (default: the cluster's)
    account: str | None = None  # sbatch --account to charge
    gpus_per_job: int = 1  # more than 1: one DDP process per GPU (trainer.devices: auto takes them all)
    time: str = "24:00:00"  # SLURM's forms, quoted: "90" (minutes), "H:M:S", "D-H", "D-H:M:S"; requeued past it
    cpus_per_task: int | None = None  # CPU cores of each job (default: the cluster's)
    mem_gb: int | None = None  # memory of each job in GB (default: the cluster's)
    additional: dict = field(default_factory=dict)  # other sbatch options, e.g. {qos: high, constraint: a100}


@dataclass
class RunConfig:
    experiment: str = "experiment"  # name of the run's group in runs/ and in reports
    seed: int = 0  # seeds the weights, the data order and the augmentation
    mode: str = "instance_uncertainty"  # how each member's loss is made: a registered mode (iwu train --help lists them)
    out: str | None = None  # run directory (default: runs/<experiment>/<mode>/seed<seed>)
    resume: bool = False  # continue the run in `out` from its last checkpoint (same config)
    val_every: int = 100  # validate (and checkpoint the best) every N training steps
    members: list[MemberConfig] = field(  # the ensemble's networks, each with its own rate
        default_factory=lambda: [MemberConfig("deeplabv3plus_resnet101", 1e-4)])
    model: ModelConfig = field(default_factory=ModelConfig)  # options shared by every member
    optim: OptimConfig = field(default_factory=OptimConfig)  # Adam with a poly schedule
    loss: LossConfig = field(default_factory=LossConfig)  # options of the modes' losses and weights
    data: DataConfig = field(default_factory=DataConfig)  # the datasets and their loaders (iwu.data.config)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # Lightning Trainer settings
    slurm: SlurmConfig = field(default_factory=SlurmConfig)  # where a run is, not what it is: resume ignores it
    imports: list[str] = field(default_factory=list)  # modules registering its members (iwu train --import)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- loading ----------------------------------------------------------------------


def load_config(path, overrides: typing.Iterable[str] = ()) -> RunConfig:
    """Read `path` (following `base:` links), apply `a.b.c=value` overrides, check everything."""
    # Start from the defaults, so that an override meets the real shape (a list, a number).
    raw = _merge(RunConfig().to_dict(), _read_with_bases(find_config(path), ()))  # a file or a packaged name
    for text in overrides:
        _apply_override(raw, text)
    config = _build(RunConfig, raw, "")
    _check_values(config)
    return config


def config_from_dict(raw: dict, where: str = "config") -> RunConfig:
    """A RunConfig from a plain dict (as `to_dict` or a checkpoint holds it), checked like a file."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping of config keys")
    config = _build(RunConfig, _merge(RunConfig().to_dict(), raw), "")
    _check_values(config)
    return config


def data_config(raw, where: str = "data") -> DataConfig:
    """The data section alone from a plain mapping (a DataModule built from a dict), checked as at load."""
    data = _build(DataConfig, raw, where)
    check_data(data, where)
    return data


def add_imports(config: RunConfig, modules) -> None:
    """Record modules given with --import in the run's config: `iwu train` of that config imports them,
    and the commands that load the run name them when they are needed (they import only what is given)."""
    config.imports = list(dict.fromkeys([*config.imports, *modules]))


def config_yaml(config: RunConfig) -> str:
    """The resolved config as YAML that `load_config` gives back."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def save_config(config: RunConfig, path) -> Path:
    """Write the resolved config so that `load_config(path)` gives it back."""
    return atomic_write_bytes(path, config_yaml(config).encode())



MAX_CONFIG_BYTES = 16 * 2**20  # a config is a page of YAML; the paper's, with every base, is under 10 kB


def _safe_yaml(text: str, where: str):
    """`yaml.safe_load`, with what the parser itself cannot bound turned into one line: nesting that
    exhausts its recursion, integers of more digits than Python converts."""
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to read (at most {MAX_DEPTH} levels)") from None
    except ValueError as err:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise UserError(f"{where}: a value YAML cannot convert ({' '.join(str(err).split())[:100]})") from None


def _read_yaml(path: Path) -> dict:
    try:
        # a device or a FIFO named as a config (/dev/zero) would be read without end
        if path.exists() and not path.is_file():
            raise UserError(f"{path}: cannot read the config (not a regular file: a folder, a device or a pipe)")
        if path.exists() and path.stat().st_size > MAX_CONFIG_BYTES:
            raise UserError(f"{path}: {path.stat().st_size:,} bytes; a config is at most {MAX_CONFIG_BYTES:,}")
        raw = _safe_yaml(path.read_text(encoding="utf-8"), str(path))
    except OSError as err:
        raise UserError(f"{path}: cannot read the config ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: cannot read the config (not UTF-8 text)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: invalid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    if raw is None:  # an empty file is an empty config
        return {}
    check_bounded(raw, str(path))
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    return raw


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> dict:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise UserError(f"{path}: base cycle: {cycle}")
    raw = _read_yaml(path)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise UserError(f"{path}: base: expected a file name, got {base!r}")
    return _merge(_read_with_bases(_base_file(path, base), (*chain, resolved)), raw)


def _base_file(path: Path, base: str) -> Path:
    """`base:` as the command line reads a config: a file beside `path` wins, else a packaged config of
    that name (`base: demo`, `base: paper/base`)."""
    beside = path.parent / base
    if beside.exists():
        return beside
    try:
        return find_config(base)
    except UserError:
        raise UserError(f"{path}: base: {base}: no file {beside}, nor a config that ships with iwu; "
                        f"{LIST_HINT}") from None


def _merge(base: dict, over: dict) -> dict:
    """Mappings merge key by key; anything else (lists included) is replaced whole."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = _merge(out[key], value)
        out[key] = value
    return out


def _apply_override(raw: dict, text: str) -> None:
    key, sep, value = str(text).partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not all(parts):
        raise UserError(f"override {text!r}: expected key=value, e.g. seed=3 or trainer.max_steps=20")
    try:
        value = _safe_yaml(value, f"override {key}")
    except yaml.YAMLError:
        raise UserError(f"{key}: cannot read the value {value!r} (YAML)") from None
    check_bounded(value, f"override {key}")
    node = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, dict) and node.get(part) is None:  # an optional section, null by default
            node[part] = {}
        node = node[_index(node, part, key)] if isinstance(node, list) else node[part]
        if not isinstance(node, (dict, list)):
            raise UserError(f"{key}: {'.'.join(parts[: i + 1])} is not a section of keys; set it whole")
    node[_index(node, parts[-1], key) if isinstance(node, list) else parts[-1]] = value


def _index(items: list, part: str, key: str) -> int:
    """`members.1.lr`: a list's item by its position."""
    if not part.isdigit() or int(part) >= len(items):
        raise UserError(f"{key}: {part!r} is not a position in its list of {len(items)} item(s), counted from 0")
    return int(part)


# --- checking ---------------------------------------------------------------------

_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          list: "a list", dict: "a mapping", type(None): "null"}  # fmt: skip


def _describe(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(str(v) for v in typing.get_args(tp))
    if isinstance(tp, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return _WORDS.get(typing.get_origin(tp) or tp, str(tp))


def _wrong(key: str, tp, value) -> UserError:
    return UserError(f"{key}: expected {_describe(tp)}, got {value!r}")


def _convert(value, tp, key: str):
    """`value` checked against the annotation `tp`, converted where YAML is loose."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if isinstance(tp, types.UnionType):
        section = [arm for arm in typing.get_args(tp) if dataclasses.is_dataclass(arm)]
        if section and isinstance(value, dict):  # a mapping for an optional section: its own key's message
            return _build(section[0], value, key)
        for arm in typing.get_args(tp):
            try:
                return _convert(value, arm, key)
            except UserError:
                pass
        raise _wrong(key, tp, value)
    if origin is Literal:
        choices = typing.get_args(tp)
        if not any(value == c and type(value) is type(c) for c in choices):
            hint = did_you_mean(str(value), [str(c) for c in choices], "; did you mean {}?")
            raise UserError(f"{key}: expected {_describe(tp)}, got {value!r}{hint}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _wrong(key, tp, value)
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        # YAML 1.1 reads 1e-4 (no dot) as a string, so a string that parses is fine.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _wrong(key, tp, value) from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _wrong(key, tp, value)
        return float(value)
    if tp is int and isinstance(value, bool):  # bool is an int in Python, not in a config
        raise _wrong(key, tp, value)
    if tp is str and isinstance(value, int | float) and not isinstance(value, bool):
        raise UserError(f"{key}: expected a string, got the number {value!r}; quote it "
                        "(YAML reads an unquoted 24:00:00 as 86400)")
    if not isinstance(value, tp):
        raise _wrong(key, tp, value)
    return value


def _build(cls, raw, prefix: str):
    if not isinstance(raw, dict):
        raise _wrong(prefix, cls, raw)
    if hasattr(cls, "upgrade"):  # keys an earlier version wrote, as today's
        raw = cls.upgrade(raw, prefix)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    dotted = (lambda name: f"{prefix}.{name}") if prefix else (lambda name: name)
    kwargs = {}
    for name, value in raw.items():
        if name not in hints:
            near = close_matches(str(name), names)
            hint = f"did you mean {dotted(near[0])}?" if near else "known keys: " + ", ".join(names)
            raise UserError(f"{dotted(name)}: unknown key; {hint}")
        kwargs[name] = _convert(value, hints[name], dotted(name))
    for f in dataclasses.fields(cls):
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"{dotted(f.name)}: missing; expected {_describe(hints[f.name])}")
    return cls(**kwargs)


MAX_SEED = 2**32 - 1


def _check_values(c: RunConfig) -> None:
    """Ranges that types alone do not say."""

    def require(key: str, value, ok: bool, expected: str) -> None:
        if not ok:
            raise UserError(f"{key}: expected {expected}, got {value!r}")

    from iwu.method.modes import MODES

    if c.mode not in MODES:
        raise UserError(f"mode: unknown mode {c.mode!r}{did_you_mean(c.mode, MODES, '; did you mean {}?')} (modes: "
                        f"{', '.join(sorted(MODES))}; your own: register_mode and --import)")
    require("seed", c.seed, 0 <= c.seed <= MAX_SEED, f"an integer from 0 to {MAX_SEED} (numpy's seeds)")
    # the experiment names folders, figure titles and table cells
    require("experiment", f"{c.experiment[:40]}...", len(c.experiment) <= MAX_NAME,
            f"a name of at most {MAX_NAME} characters (it names folders, titles and table columns)")
    require("val_every", c.val_every, c.val_every >= 1, "an integer >= 1")
    require("members", c.members, c.members != [], "at least one member, e.g. [{name: deeplabv3plus_resnet101, lr: 1e-4}]")
    for i, m in enumerate(c.members):
        require(f"members[{i}].name", m.name, m.name != "", "a model name")
        require(f"members[{i}].lr", m.lr, m.lr > 0, "a number > 0")
    require("model.output_stride", c.model.output_stride, c.model.output_stride >= 1, "an integer >= 1")
    require("model.bn_momentum", c.model.bn_momentum, 0 <= c.model.bn_momentum <= 1, "a number in [0, 1]")
    for key in ("weight_decay", "poly_power", "min_lr"):
        value = getattr(c.optim, key)
        require(f"optim.{key}", value, value >= 0, "a number >= 0")
    require("optim.backbone_lr_scale", c.optim.backbone_lr_scale, c.optim.backbone_lr_scale > 0, "a number > 0")
    require("loss.focal_gamma", c.loss.focal_gamma, c.loss.focal_gamma >= 0, "a number >= 0")
    require("loss.exponent", c.loss.exponent, c.loss.exponent is None or c.loss.exponent >= 0, "a number >= 0")
    require("loss.mc_samples", c.loss.mc_samples, c.loss.mc_samples >= 2, "an integer >= 2 (passes to compare)")
    require("loss.dice_weight", c.loss.dice_weight, 0 <= c.loss.dice_weight <= 1, "a number in [0, 1]")
    require("loss.ohem_threshold", c.loss.ohem_threshold, 0 < c.loss.ohem_threshold < 1, "a number in (0, 1)")
    require("loss.ohem_min_kept", c.loss.ohem_min_kept, c.loss.ohem_min_kept is None or c.loss.ohem_min_kept >= 1,
            "an integer >= 1, or null")
    require("loss.lovasz_weight", c.loss.lovasz_weight, 0 <= c.loss.lovasz_weight <= 1, "a number in [0, 1]")
    require("loss.cb_beta", c.loss.cb_beta, 0 <= c.loss.cb_beta < 1, "a number in [0, 1)")
    for key in ("max_epochs", "max_steps"):  # -1 is Lightning's "no limit"
        value = getattr(c.trainer, key)
        require(f"trainer.{key}", value, value == -1 or value >= 1, "-1 (no limit) or an integer >= 1")
    require("trainer.log_every_n_steps", c.trainer.log_every_n_steps, c.trainer.log_every_n_steps >= 1,
            "an integer >= 1")
    require("trainer.num_nodes", c.trainer.num_nodes, c.trainer.num_nodes >= 1, "an integer >= 1")
    check_data(c.data)
    require("slurm.gpus_per_job", c.slurm.gpus_per_job, c.slurm.gpus_per_job >= 0, "an integer >= 0")
