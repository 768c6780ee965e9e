"""The `iwu` command.

Parsers are built here, with no heavy imports, so `iwu --help` is instant;
each command imports its module only when it runs. A `UserError` anywhere
below becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import math
import os
import sys

from iwu import __version__
from iwu.util.bounded import MAX_SIDE
from iwu.constants import ENSEMBLE
from iwu.errors import Stopped, UserError


def _whole(minimum: int, maximum: int | None = None):
    """An argparse type for whole numbers in [minimum, maximum], so a bad count is argparse's one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{value} is above {maximum}")
        return value

    parse.__name__ = f"whole number >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    return parse


def _finite(text: str) -> float:
    """An argparse type for a finite number (float() also takes nan and inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


_finite.__name__ = "finite number"
COUNT, POSITIVE, SIDE = _whole(0), _whole(1), _whole(16, MAX_SIDE)

# Help texts say {kinds} and {modes} where the registered dataset kinds and training modes belong; they are
# filled in only when help is printed, since the datasets' module imports torch.
_REGISTRY_LISTS = {
    "{kinds}": lambda: ", ".join(importlib.import_module("iwu.data.sources").KINDS),
    "{modes}": lambda: ", ".join(importlib.import_module("iwu.method.modes").MODES),
}
DATA_HELP = "the dataset, KIND:ROOT with KIND one of {kinds}; acdc:ROOT:fog,night keeps only those conditions"
DEVICE_HELP = "cpu, cuda, cuda:1 (default: cuda when present)"
RUN_HELP = ("a run directory (its best ensemble), a run's .ckpt (best_ensemble.ckpt, last.ckpt) or one member's "
            "best_<member>.pt")
SPLIT_HELP = "which split of the dataset, e.g. train, val or test"


def _fill_lists(text: str | None) -> str | None:
    for placeholder, names in _REGISTRY_LISTS.items():
        if text and placeholder in text:
            text = text.replace(placeholder, names())
    return text


class _Formatter(argparse.HelpFormatter):
    """Text wraps, but lines indented by two spaces (examples) stay as written; an option's default is shown
    unless its help says it or it is nothing (None, a flag's, an empty list)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        wrap = super()._fill_text
        lines = text.splitlines()
        return "\n".join(indent + line if line.startswith("  ") else wrap(line, width, indent) for line in lines)

    def _get_help_string(self, action: argparse.Action) -> str:
        text, default = action.help or "", action.default
        if (not action.option_strings or "default" in text or default is None or isinstance(default, bool)
                or default == [] or default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """A parser (its subcommands' too) whose help lists the registries as they are when it is printed."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def format_help(self) -> str:
        self.description, self.epilog = _fill_lists(self.description), _fill_lists(self.epilog)
        for action in self._actions:
            action.help = _fill_lists(action.help)
        return super().format_help()


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _add_import_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help=f"import a Python module first, e.g. one that registers your models {what}(repeatable)")


class _ListConfigs(argparse.Action):
    """Print the configs that ship with iwu and exit, as --help does: no CONFIG needed."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from iwu.config.packaged import packaged_config_names, packaged_configs_dir

        names, folder = packaged_config_names(), packaged_configs_dir()
        width = max(map(len, names))
        try:
            print("\n".join(f"{name:<{width}}  {folder / name}.yaml" for name in names), flush=True)
        except BrokenPipeError:
            parser.exit(_reader_gone())
        parser.exit()


def _add_list_configs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list-configs", action=_ListConfigs, help="list the configs that ship with iwu and exit; "
                   "CONFIG may name one instead of a file, e.g. paper/acdc_ensemble")


def _import_modules(args: argparse.Namespace) -> None:
    from iwu.models import import_user_modules

    import_user_modules(args.imports)


def _run_demo(args: argparse.Namespace) -> int:
    from iwu.engine.demo import run_demo

    return run_demo(out=args.out, seeds=args.seeds, overrides=args.overrides)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the method against plain cross-entropy on built-in synthetic data (CPU, minutes)",
                       description="Trains the demo config (iwu/configs/demo.yaml) in standard and "
                                   "instance_uncertainty modes and prints their per-class IoU side by side.",
                       epilog=_examples("iwu demo", "iwu demo --seeds 1 trainer.max_steps=100 --out runs/quick"))
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the demo config, e.g. "
                   "trainer.max_steps=100")
    p.add_argument("--out", default="runs/demo", help="folder for the data, the runs, the figure and the numbers")
    p.add_argument("--seeds", type=POSITIVE, default=2, help="seeds per mode")
    p.set_defaults(func=_run_demo)


def _run_train(args: argparse.Namespace) -> int:
    from iwu.config.schema import add_imports, load_config
    from iwu.models import import_user_modules
    from iwu.engine.run_dir import FINAL, run_dir
    from iwu.engine.train import train

    import_user_modules(args.imports)  # before the config: its members may be theirs
    config = load_config(args.config, args.overrides)
    add_imports(config, args.imports)
    final = train(config, progress=args.progress)
    best = final["results"].get(ENSEMBLE, {})
    print(f"iwu train: best ensemble mIoU {best.get('miou', float('nan')):.4f} at step {best.get('best_step')}; "
          f"{run_dir(config) / FINAL}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model or an ensemble from a config file",
                       description="Train from CONFIG, a YAML file, with key=value pairs overriding its keys. "
                                   "Modes (mode=...): {modes}. Every key, its value, default and meaning: "
                                   "iwu config --show CONFIG [key=value ...].",
                       epilog=_examples("iwu train configs/demo.yaml seed=3 out=runs/try",
                                        "iwu train configs/demo.yaml mode=standard trainer.max_steps=20",
                                        "iwu train configs/demo.yaml out=runs/try resume=true  # continue after a stop",
                                        "iwu config --show configs/demo.yaml mode=focal  # every key of that run"))
    p.add_argument("config", help="YAML run config (configs/paper/ has the paper's, configs/demo.yaml the demo)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="set a dotted config key to a YAML value; common: out=DIR (the run directory; default "
                        "runs/EXPERIMENT/MODE/seedN), seed=N, mode=MODE, resume=true (continue the run in out= from "
                        "its last checkpoint), trainer.max_steps=N, data.root=DIR, members.1.lr=5e-4 (a list item "
                        "by position); every key: iwu config --show CONFIG")
    _add_import_option(p, "(recorded in the run; evaluate, predict, masks and export name it when it is needed, and import it only when given --import again) ")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar (for logs)")
    _add_list_configs(p)
    p.set_defaults(func=_run_train)


def _run_config(args: argparse.Namespace) -> int:
    from iwu.config.schema import add_imports, config_yaml, load_config
    from iwu.config.doc import show_config

    if args.imports:
        _import_modules(args)  # before the config: its mode and members may be theirs
    config = load_config(args.show, args.overrides)
    add_imports(config, args.imports)
    if args.yaml:
        print(config_yaml(config), end="")
    else:
        print(f"# {' '.join([args.show, *args.overrides])}: every key; after it, its meaning and, where the "
              "value differs, its default")
        print(show_config(config), end="")
    return 0


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="a run config as a run would use it: every key, its value, default and meaning",
                       description="Prints CONFIG with the overrides applied and every key included, as YAML "
                                   "with each key's meaning, and its default where the value differs, as a comment. "
                                   "The output is a config file that iwu train reads.",
                       epilog=_examples("iwu config --show configs/demo.yaml seed=3",
                                        "iwu config --show configs/demo.yaml mode=standard --yaml > my.yaml"))
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--show", metavar="CONFIG", help="the YAML run config to print: a file, or the name of "
                        "one that ships with iwu, e.g. paper/acdc_ensemble")
    action.add_argument("--list-configs", action=_ListConfigs, help="list the configs that ship with iwu and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of config keys, as for train")
    p.add_argument("--yaml", action="store_true", help="plain YAML, without the comments")
    _add_import_option(p, "")
    p.set_defaults(func=_run_config)


def _run_sweep(args: argparse.Namespace) -> int:
    from iwu.sweep import run_sweep

    options = {"partition": args.partition, "account": args.account, "gpus_per_job": args.gpus_per_job,
               "time": args.time}
    return run_sweep(args.config, seeds=args.seeds, modes=args.modes, overrides=args.overrides,
                     launcher=args.launcher, parallel=args.parallel, imports=args.imports, slurm_options=options,
                     dry_run=args.dry_run)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="many runs of a config (seeds x modes x override values), here or on SLURM",
                       description="Trains every point of seeds x modes x the values of each key=a,b override, "
                                   "one `iwu train` run each under out=DIR (default runs/<experiment>); runs that "
                                   "finished are skipped and the others resume, so the same command finishes an "
                                   "interrupted sweep. Then: iwu report DIR.",
                       epilog=_examples("iwu sweep configs/demo.yaml --seeds 3 out=runs/sweep --dry-run",
                                        "iwu sweep configs/demo.yaml --seeds 0-4 --modes standard,focal "
                                        "members.0.lr=1e-3,1e-4 --parallel 2"))
    p.add_argument("config", help="YAML run config (keys: iwu config --show CONFIG)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides for every run; key=a,b makes an axis of the sweep; out=DIR puts it there")
    p.add_argument("--seeds", required=True, help="a count (30: seeds 0-29), a range (10-19) or a list (0,4,7)")
    p.add_argument("--modes", default="standard,instance_uncertainty",
                   help="comma-separated training modes, of: {modes}")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: processes on this machine; slurm: a job array through submitit")
    p.add_argument("--parallel", type=POSITIVE, default=1,
                   help="runs at once (local), or the most jobs of the array running at once (slurm)")
    _add_import_option(p, "(each run records it) ")
    p.add_argument("--dry-run", action="store_true", help="only list the runs and what would be done to each")
    slurm = p.add_argument_group("slurm (default: the config's slurm section)")
    slurm.add_argument("--partition", default=None, help="the cluster's partition for the jobs")
    slurm.add_argument("--account", default=None, help="the account charged for the jobs")
    slurm.add_argument("--gpus-per-job", type=COUNT, default=None, help="GPUs of each run (default 1)")
    slurm.add_argument("--time", default=None, help="time limit of each job, e.g. 24:00:00 or 2-00:00:00; "
                                                    "a run past it is requeued and resumes")
    _add_list_configs(p)
    p.set_defaults(func=_run_sweep)


def _add_overwrite_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} already at the output names "
                                                            "(default: refuse)")


def _run_evaluate(args: argparse.Namespace) -> int:
    _import_modules(args)  # runs record theirs, but only what the user names here is imported
    from iwu.inference.evaluation import run_evaluate

    return run_evaluate(args.run, args.data, split=args.split, size=args.size, batch_size=args.batch_size,
                        workers=args.workers, uncertainty_threshold=args.uncertainty_threshold,
                        save_predictions=args.save_predictions, device=args.device, overwrite=args.overwrite,
                        native=args.native)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a run's members and ensemble on any dataset, with uncertainty quality",
                       description="Per-class IoU of every member and of the ensemble, and how well the ensemble's "
                                   "uncertainty finds its errors, written to RUN/eval_<dataset>.json and printed.",
                       epilog=_examples("iwu evaluate runs/demo/instance_uncertainty/seed0 "
                                        "--data cityscapes:runs/demo/data",
                                        "iwu evaluate RUN --data acdc:/data/acdc:fog,night --native --device cuda"))
    p.add_argument("run", metavar="RUN_DIR_OR_CKPT", help=RUN_HELP)
    p.add_argument("--data", required=True, metavar="KIND:ROOT", help=DATA_HELP)
    p.add_argument("--split", default="val", help=SPLIT_HELP)
    p.add_argument("--size", type=SIDE, default=None, help="image side (default: the run's training size)")
    p.add_argument("--batch-size", type=POSITIVE, default=1, help="images per forward pass (same numbers)")
    p.add_argument("--workers", type=COUNT, default=0, help="processes decoding images")
    p.add_argument("--native", action="store_true",
                   help="score (and save) at each label's own resolution: the model sees --size, its logits are "
                        "upsampled to the label (benchmark numbers; eval_<dataset>-native.json)")
    p.add_argument("--uncertainty-threshold", type=_finite, default=None,
                   help="PAvPU's threshold (default: the mean patch uncertainty of the split)")
    p.add_argument("--save-predictions", metavar="DIR", default=None,
                   help="also write the ensemble's predictions as PNGs (Cityscapes: labelIds); a folder "
                        "outside the dataset")
    _add_overwrite_option(p, "prediction PNGs")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    _add_import_option(p, "")
    p.set_defaults(func=_run_evaluate)


def _run_predict(args: argparse.Namespace) -> int:
    _import_modules(args)  # runs record theirs, but only what the user names here is imported
    from iwu.inference.prediction import run_predict

    return run_predict(args.run, args.images, args.out, size=args.size, device=args.device,
                       overwrite=args.overwrite, panel=args.panel)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segmentation and uncertainty maps for images",
                       description="For each image, <name>_seg.png (colours of the classes), _entropy.png, "
                                   "_instance.png (the uncertainty of each predicted instance) and _overlay.png in "
                                   "--out.",
                       epilog=_examples("iwu predict runs/demo/instance_uncertainty/seed0 photos/ --out maps"))
    p.add_argument("run", metavar="RUN_DIR_OR_CKPT", help=RUN_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files, or folders searched at any depth (png, jpg, bmp, tif, webp)")
    p.add_argument("--out", required=True, help="folder for the PNGs, outside the images' folders")
    _add_overwrite_option(p, "PNGs")
    p.add_argument("--size", type=SIDE, default=None, help="side the ensemble sees (default: training size)")
    p.add_argument("--panel", action="store_true",
                   help="one figure per image, <stem>_panel.png: the image, segmentation and uncertainty side by "
                        "side (instead of the four maps)")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    _add_import_option(p, "")
    p.set_defaults(func=_run_predict)


def _run_masks(args: argparse.Namespace) -> int:
    _import_modules(args)  # runs record theirs, but only what the user names here is imported
    from iwu.inference.mask_writing import run_masks

    return run_masks(args.run, args.data, args.out, split=args.split, size=args.size,
                     batch_size=args.batch_size, workers=args.workers, device=args.device,
                     overwrite=args.overwrite)


def _add_masks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("masks", help="store a trained ensemble's instance-uncertainty masks for offline_masks",
                       description="Writes the ensemble's instance-uncertainty mask of every image of the split, "
                                   "so that a single model can train with them (mode=offline_masks) without the "
                                   "ensemble.",
                       epilog=_examples("iwu masks runs/acdc/instance_uncertainty/seed0 --data acdc:/data/acdc "
                                        "--out masks/acdc",
                                        "iwu train configs/paper/acdc_resnet101.yaml mode=offline_masks "
                                        "loss.masks_dir=masks/acdc"))
    p.add_argument("run", metavar="RUN_DIR", help="the trained ensemble's run directory")
    p.add_argument("--data", required=True, metavar="KIND:ROOT", help=DATA_HELP)
    p.add_argument("--out", required=True, help="mask folder, outside the dataset (then: mode=offline_masks "
                                                "loss.masks_dir=DIR); an earlier mask folder is added to")
    _add_overwrite_option(p, "files in a folder that holds no masks")
    p.add_argument("--split", default="train", help=SPLIT_HELP)
    p.add_argument("--size", type=SIDE, default=None, help="image side (default: the run's training size)")
    p.add_argument("--batch-size", type=POSITIVE, default=1, help="images per forward pass (same masks)")
    p.add_argument("--workers", type=COUNT, default=0, help="processes decoding images")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    _add_import_option(p, "")
    p.set_defaults(func=_run_masks)


def _run_import(args: argparse.Namespace) -> int:
    from iwu.interop.published import import_published

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    runs = import_published(args.checkpoints, args.out, each=args.each, mode=args.mode, dataset=args.dataset,
                            output_stride=args.output_stride, seed=args.seed, classes=classes,
                            experiment=args.experiment, size=args.size)
    print(f"imported {len(runs)} run{'s' * (len(runs) != 1)}; next: iwu evaluate RUN --data KIND:ROOT, "
          f"then iwu report {args.out}")
    return 0


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="checkpoints of the published code as run directories (evaluate, predict, "
                                      "masks, report)",
                       description="Files named best_<model>_<dataset>_os<16|8>_seed<k>[_<tag>].pth that share "
                                   "dataset, output stride, seed and tag become one run (an ensemble when several): "
                                   "OUT/<mode>/seed<k>/. The mode is instance_uncertainty for the method's tag "
                                   "(uncertainty_instance_ensembling), standard otherwise.",
                       epilog=_examples("iwu import checkpoints/best_*_cityscapes_os16_seed*.pth --out runs/published",
                                        "iwu import old.pth --each --dataset acdc --seed 3 --out runs/published"))
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="the published .pth files (dicts with model_state)")
    p.add_argument("--out", required=True, help="folder for the run directories")
    p.add_argument("--each", action="store_true", help="one run per file (OUT/<mode>/<model>/seed<k>/)")
    # iwu.config.schema.Mode, spelled out so the parser imports nothing heavy
    p.add_argument("--mode", default=None, help="how the networks were trained, one of {modes} "
                                                 "(default: from the file names' tag)")
    p.add_argument("--dataset", default=None, help="the dataset they were trained on, for files named otherwise "
                                                   "(cityscapes, acdc, voc, kvasir)")
    p.add_argument("--output-stride", type=int, choices=[8, 16], default=None, help="default: from the names, or 16")
    p.add_argument("--seed", type=COUNT, default=None, help="default: from the names, or 0")
    p.add_argument("--classes", default=None, help="class names in train-id order, comma-separated "
                                                   "(default: Cityscapes' 19 for cityscapes and acdc)")
    p.add_argument("--experiment", default="published", help="experiment name in reports")
    p.add_argument("--size", type=SIDE, default=768, help="image side for evaluate, predict and masks")
    p.set_defaults(func=_run_import)


def _run_export(args: argparse.Namespace) -> int:
    from iwu.interop.export import export_run

    _import_modules(args)
    export_run(args.run, args.format, out=args.out, size=args.size)
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a run's members and ensemble as ONNX or TorchScript files, for deployment",
                       description="Writes each member (normalised images -> logits) and the ensemble (-> mean "
                                   "softmax) to RUN/export/ (or --out), traced at --size with any batch size, "
                                   "and checks each file's outputs against PyTorch's.",
                       epilog=_examples("iwu export runs/demo/instance_uncertainty/seed0",
                                        "iwu export RUN --format torchscript --size 512 --out deploy"))
    p.add_argument("run", metavar="RUN_DIR_OR_CKPT", help=RUN_HELP)
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="file format")
    p.add_argument("--out", default=None, help="folder for the files (default: RUN/export)")
    p.add_argument("--size", type=SIDE, default=None, help="image side traced (default: the training size)")
    _add_import_option(p, "")
    p.set_defaults(func=_run_export)


def _run_weights(args: argparse.Namespace) -> int:
    from iwu.config.schema import load_config
    from iwu.models.prefetch import fetch, member_weights

    _import_modules(args)
    config = load_config(args.config, args.overrides)
    files = []
    for m in config.members:
        needed = member_weights(m.name, m.args)
        files += needed
        for f in needed or [None]:
            state = "no pretrained files known" if f is None else ("present" if f.present else "MISSING")
            print(f"{m.name}: {state}" + (f"  {f.source} -> {f.path}" if f else ""))
    if args.fetch:
        fetch(files)
        print(f"fetched {sum(not f.present for f in files)} file(s); copy the caches to machines without internet")
        return 0
    return 1 if any(not f.present for f in files) else 0


def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list the pretrained files a config needs and where they go; --fetch them",
                       description="For every member of CONFIG: the pretrained weights files it reads, where "
                                   "the local cache keeps them ($TORCH_HOME for torchvision, the Hugging Face "
                                   "cache for smp and timm) and whether they are there. Runs never download; "
                                   "on a machine with internet, --fetch fills the caches to copy over. "
                                   "Exit 1 when a file is missing.",
                       epilog=_examples("iwu weights configs/paper/acdc_ensemble.yaml",
                                        "iwu weights configs/paper/acdc_ensemble.yaml --fetch"))
    p.add_argument("config", help="YAML run config")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of config keys, as for train")
    p.add_argument("--fetch", action="store_true", help="download the missing files into the caches")
    _add_import_option(p, "")
    _add_list_configs(p)
    p.set_defaults(func=_run_weights)


def _run_report(args: argparse.Namespace) -> int:
    from iwu.report import run_report

    return run_report(args.runs, out=args.out, by=args.by, member=args.member, fmt=args.format, paper=args.paper,
                      class_counts=args.class_counts, percent=args.percent, std=args.std, test=args.test,
                      eval_set=args.eval, rare=args.rare)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="per-class tables over seeds (mean ± std, t-test) from run directories",
                       epilog=_examples("iwu report runs/acdc_ensemble --paper table1 --out reports/acdc",
                                        "iwu report runs/demo --class-counts runs/demo/class_counts.json "
                                        "--format md,tex,csv --out reports/demo"))
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or folders holding them at any depth")
    p.add_argument("--by", default=None, help="group columns by fields of mode, model, experiment, train, eval "
                                              "(default: mode, plus what differs)")
    p.add_argument("--member", default=ENSEMBLE, help="ensemble (default), a member name, or all")
    p.add_argument("--format", default="md", help="md, tex, csv, a comma-separated list, or all")
    p.add_argument("--out", default=None, help="folder for report.* and difference.png")
    p.add_argument("--paper", default=None, metavar="TABLE", help="put the published numbers beside (table1, table2, table3)")
    p.add_argument("--class-counts", default=None, metavar="JSON|KIND:ROOT",
                   help="the training set's class_counts.json, or the dataset as --data takes it (acdc:ROOT) once "
                        "iwu prepare has cached it; orders the figure by frequency")
    p.add_argument("--eval", default=None, metavar="DATASET",
                   help="only the scores on this validation set (e.g. cityscapes for a cross-domain column alone)")
    p.add_argument("--rare", type=int, default=None, metavar="K",
                   help="add a row: each run's mean IoU over the K classes rarest in training (needs --class-counts)")
    p.add_argument("--percent", action="store_true", help="IoU x100 with one decimal")
    # the choices are iwu.report.stats.DDOF and TESTS, spelled out so the parser imports no numpy
    p.add_argument("--std", choices=["sample", "population"], default="sample",
                   help="standard deviation of the cells and error bars: sample (ddof=1, default) or "
                        "population (ddof=0, np.std as in the paper's scripts)")
    p.add_argument("--test", choices=["welch", "student"], default="welch",
                   help="t-test of two columns: welch (unequal variances, default) or student "
                        "(pooled, scipy.stats.ttest_ind(a, b) as in the paper's scripts)")
    p.set_defaults(func=_run_report)


def _run_synth(args: argparse.Namespace) -> int:
    from iwu.data.synthetic import write_synthetic

    root = write_synthetic(
        args.out, layout=args.layout, n_train=args.n_train, n_val=args.n_val, size=args.size,
        height=args.height, seed=args.seed, write_train_ids=args.train_ids, force=args.force,
    )
    print(f"wrote {args.n_train} train and {args.n_val} val {args.layout} scenes to {root}")
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write synthetic street scenes in the Cityscapes or ACDC layout "
                                     "(or small Kvasir-SEG / Pascal VOC fakes)",
                       epilog=_examples("iwu synth --out data/synth",
                                        "iwu synth --out data/synth_acdc --layout acdc --n-train 40 --size 384"))
    p.add_argument("--out", required=True, help="folder to write (new, empty, or an earlier synth output of the "
                                                "same layout and seed, which is replaced)")
    p.add_argument("--layout", choices=["cityscapes", "acdc", "kvasir", "voc"], default="cityscapes",
                   help="folder and file names of that dataset, so --data LAYOUT:OUT reads them")
    p.add_argument("--n-train", type=COUNT, default=20, help="training images (acdc: spread over the four conditions)")
    p.add_argument("--n-val", type=COUNT, default=5, help="validation images")
    p.add_argument("--size", type=SIDE, default=256, help="image width in pixels")
    p.add_argument("--height", type=POSITIVE, default=None, help="image height (default: half the width)")
    p.add_argument("--seed", type=COUNT, default=0, help="same seed, same bytes")
    p.add_argument("--train-ids", action="store_true", help="cityscapes: also write *_gtFine_labelTrainIds.png")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier synthetic set of another layout or seed at --out")
    p.set_defaults(func=_run_synth)


def _run_prepare(args: argparse.Namespace) -> int:
    from iwu.data.prepare import run_prepare

    return run_prepare(
        args.data, size=args.size, splits=args.split, check=args.check, cache_dir=args.cache_dir,
        workers=args.workers, rebuild=args.rebuild,
    )


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="cache a dataset resized for training and count its classes, or --check it",
                       epilog=_examples("iwu prepare --data acdc:/data/acdc --check",
                                        "iwu prepare --data cityscapes:/data/cityscapes --size 768 --workers 8"))
    p.add_argument("--data", required=True, metavar="KIND:ROOT", help=DATA_HELP)
    p.add_argument("--size", type=SIDE, default=768, help="side of the square training images")
    p.add_argument("--split", default="train,val", help="comma-separated splits (default train,val)")
    p.add_argument("--check", action="store_true", help="only validate: list every problem, exit 1 if any")
    p.add_argument("--cache-dir", default=None, help="cache root (default $IWU_CACHE or ~/.cache/iwu)")
    p.add_argument("--workers", type=COUNT, default=2, help="processes decoding files")
    p.add_argument("--rebuild", action="store_true", help="rebuild the cache even if it is up to date")
    p.set_defaults(func=_run_prepare)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="iwu",
        description="Instance-wise uncertainty training for class-imbalanced semantic segmentation.",
        epilog="iwu COMMAND --help: a command's arguments, with examples. iwu config --show CONFIG: every key of a "
               "run config, with its meaning.",
    )
    parser.add_argument("--version", action="version", version=f"iwu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(sub)
    _add_config(sub)
    _add_sweep(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_masks(sub)
    _add_import(sub)
    _add_export(sub)
    _add_weights(sub)
    _add_report(sub)
    _add_demo(sub)
    _add_synth(sub)
    _add_prepare(sub)
    return parser


_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT}


def _reader_gone() -> int:
    """The reader went away (`iwu ... | head`): stop quietly, as Unix tools do."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
    return 141


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value pairs may follow options too (`iwu sweep CONFIG --seeds 3 key=value`), which argparse's
    # positional list cannot take once an option has come between
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"iwu {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Stopped as err:
        print(f"iwu {args.command}: {err}", file=sys.stderr)
        return err.status
    except BrokenPipeError:
        return _reader_gone()
    except OSError as err:
        if err.errno not in _PATH_ERRNOS or not err.filename:
            raise
        # where the user sent output or input: a read-only folder, a file where a folder belongs, ...
        print(f"iwu {args.command}: error: {err.filename}: {err.strerror}; choose another path", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"iwu {args.command}: interrupted", file=sys.stderr)
        return 130
