"""`iwu train`: one run from a config to a run directory.

    runs/<experiment>/<mode>/seed<k>/     (or `out=`)
        config.yaml        the resolved config (what `resume=true` must match)
        checkpoints/       last.ckpt, best_ensemble.ckpt, best_<member>.pt
        logs/csv/metrics.csv, logs/tensorboard/
        curves.png         training loss and validation mIoU
        final.json         best scores per model: the contract with `iwu report`

`final.json` is written last, so its presence means the run finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException

from iwu.engine.checkpoint_io import read_checkpoint
from iwu.engine.run_checkpoints import BEFORE_NONFINITE, AtomicCheckpointIO, RunCheckpoints
from iwu.config.schema import RunConfig, save_config
from iwu.data.sampler import StartData
from iwu.engine.ensemble import ENSEMBLE, EnsembleModule, NonFiniteLoss
from iwu.errors import Stopped, UserError
from iwu.util.atomic_files import atomic_write_json, owned, remove_stale_temporaries
from iwu.engine.loggers import quiet_lightning, run_loggers
from iwu.method.modes import MODES, RunFacts, check_needs
from iwu.models import import_user_modules, names_at_revision
from iwu.models.parts import backbone_of
from iwu.models.prefetch import check_weights
from iwu.plots import run_title
from iwu.plots.curves import save_curves
from iwu.engine.progress import RunProgress, live_bar
from iwu.engine.run_dir import CHECKPOINTS, CONFIG, CURVES, FINAL, LAST, LOCK, METRICS, as_loaded_today, check_run_dir, run_dir
from iwu.engine.init_from import init_members

def _resume_step(path: Path, config: RunConfig, classes) -> int:
    """The step `last.ckpt` was saved at, if today's members are the networks its weights were trained as."""
    saved = read_checkpoint(path, mmap=True)  # mmap: the weights stay unread until Lightning loads them
    about = saved.get("iwu") if isinstance(saved.get("iwu"), dict) else {}
    if "global_step" not in saved or "config" not in about:
        raise UserError(f"{path}: not a training checkpoint of an iwu run; delete it to start the run afresh")
    if not isinstance(saved.get("optimizer_states"), list) or not isinstance(saved.get("loops"), dict):
        raise UserError(f"{path}: holds weights only (no optimiser or loop state), so the run cannot continue "
                        "exactly from it; restore the run's own last.ckpt, or delete it to start afresh "
                        "(model.init_from=FILE starts a new run from its weights)")
    _same_run(path, about, config, classes)
    names = [m.name for m in config.members]
    today = names_at_revision(names, about.get("models_revision", 1))
    if today != names:
        changed = ", ".join(sorted({f"{a} (now {b})" for a, b in zip(names, today) if a != b}))
        raise UserError(f"{path}: saved by an earlier iwu, when {changed} was another network; resuming would "
                        "train its weights in the new one: start a new run with out=DIR (iwu evaluate still "
                        "loads this run as it was trained)")
    return int(saved["global_step"])


def _same_run(path: Path, about: dict, config: RunConfig, classes) -> None:
    """A last.ckpt of another run (copied in, or a folder reused) would fail deep in Lightning, or train on."""
    theirs = [m.get("name") for m in as_loaded_today(about["config"]).get("members", [])]
    ours = [m.name for m in config.members]
    if theirs != ours:
        raise UserError(f"{path}: a checkpoint of members {', '.join(theirs) or 'none'}, not this run's "
                        f"{', '.join(ours)}; resume the run it belongs to, or start this one in a new out=DIR")
    if len(about.get("classes", classes)) != len(classes):
        raise UserError(f"{path}: a checkpoint of {len(about['classes'])} classes, not this run's {len(classes)}; "
                        "resume the run it belongs to, or start this one in a new out=DIR")


def build_datamodule(config: RunConfig):
    from iwu.data import SegmentationDataModule

    dm = SegmentationDataModule(config.data, seed=config.seed)
    dm.prepare_data()
    dm.setup("fit")
    if dm.config.cache:  # the store was just built or found: its class counts cost nothing
        labeled_counts(dm)
    return dm


def labeled_counts(dm):
    """The training split's pixels per class; a UserError if none is labeled (every pixel ignore), which
    would otherwise surface as a non-finite loss and a suggestion to lower the learning rate."""
    counts = dm.train_class_counts()
    if not counts.any():
        raise UserError(f"{dm.config.root}: the {dm.config.train_split} split has no labeled pixel (every "
                        "label is ignore): nothing to learn from; `iwu prepare --check` lists such splits")
    return counts


def build_module(config: RunConfig, dm) -> EnsembleModule:
    """The training module, given what its mode needs of the training data (checked here, before the
    members are built): class weights from the split's counts, the stored masks in the batches."""
    class_weights = None
    needs = MODES[config.mode].needs
    if "class_weights" in needs:
        class_weights = _class_weights(config.loss, dm)
    check_needs(config.mode, "training", RunFacts(config.loss, dm.classes, class_weights=class_weights))
    if "masks" in needs:
        from iwu.data.mask_store import MaskStore

        dm.use_masks(MaskStore(config.loss.masks_dir))
    return EnsembleModule(config, dm.classes, class_weights=class_weights, val_names=dm.val_names)


def _class_weights(loss, dm):
    """The class weights `loss.class_weights` names, from the training split's counts."""
    from iwu.method.class_weights import effective_number_weights, median_frequency_weights
    from iwu.method.losses import class_weights_from_counts

    counts = labeled_counts(dm)
    if loss.class_weights == "median_frequency":  # of the images a class appears in: per-image counts
        return median_frequency_weights(dm.train_image_class_counts())
    if loss.class_weights == "effective_number":
        return effective_number_weights(counts, loss.cb_beta)
    return class_weights_from_counts(counts)


def total_steps(config: RunConfig, batches_per_epoch: int) -> int:
    """Training iterations: `max_steps`, or `max_epochs` x full batches per epoch, whichever is fewer."""
    t = config.trainer
    bounds = [n for n in (t.max_steps, t.max_epochs * batches_per_epoch if t.max_epochs != -1 else -1) if n != -1]
    if not bounds:
        raise UserError("trainer.max_steps and trainer.max_epochs are both -1; set one of them")
    return min(bounds)


def _cluster_plugins() -> list:
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    # Under SLURM Lightning would requeue a job itself and resume from its own "hpc" checkpoint, which
    # the run directory does not know; a run continues from last.ckpt instead (sweeps: submitit requeues).
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def slurm_tasks_here(env=None) -> int | None:
    """The tasks SLURM started on this node for the current job (one DDP process each), or None outside
    SLURM; as Lightning tells: SLURM_NTASKS set, and the job not an interactive shell."""
    env = os.environ if env is None else env
    if "SLURM_NTASKS" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    per_node = env.get("SLURM_NTASKS_PER_NODE", "")
    if per_node.isdigit():
        return int(per_node)
    nodes = env.get("SLURM_NNODES", "1")
    return max(1, int(env["SLURM_NTASKS"]) // max(1, int(nodes) if nodes.isdigit() else 1))


def _devices_wanted(devices) -> int | None:
    """trainer.devices as a count of processes on this node; None for `auto` (Lightning resolves it)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, int) or (isinstance(devices, str) and devices.strip().isdigit()):
        return int(devices)
    return None


def check_distributed(config: RunConfig, tasks: int | None, cuda: bool, batch_norm: bool = True) -> None:
    """The multi-process settings that would otherwise fail inside Lightning or torch, as one line each,
    before any process trains: SLURM's tasks against trainer.devices (a rank would wait forever for a
    process SLURM never started, or two would train alone), SyncBatchNorm off CUDA (torch runs it on GPU
    modules only), and one image per process in batch norm (DeepLab's pooled ASPP branch sees one value
    per channel, which batch norm cannot normalise in training)."""
    t = config.trainer
    wanted = _devices_wanted(t.devices)
    if tasks is not None and wanted is not None and wanted != tasks:
        raise UserError(f"trainer.devices={wanted}, but SLURM started {tasks} task(s) on this node "
                        f"(--ntasks-per-node): one process trains per task, so set trainer.devices={tasks} "
                        f"or submit with --ntasks-per-node={wanted}")
    if t.sync_batchnorm and not cuda:
        raise UserError("trainer.sync_batchnorm=true: SyncBatchNorm runs on CUDA GPUs only; set "
                        "trainer.sync_batchnorm=false on CPUs (and a data.batch_size of 2 or more per process)")
    pooled_across_ranks = t.sync_batchnorm and (tasks or wanted or 1) > 1
    if batch_norm and config.data.batch_size == 1 and not pooled_across_ranks:
        raise UserError("data.batch_size=1: batch norm cannot train on one image per process (DeepLab's pooled "
                        "ASPP branch sees one value per channel); use data.batch_size=2 or more per process"
                        + (", or trainer.sync_batchnorm=true on GPUs" if cuda else ""))


def _trainer(config: RunConfig, out: Path, callbacks: list, progress: bool, resume_step: int) -> L.Trainer:
    t = config.trainer
    return L.Trainer(
        max_epochs=-1, max_steps=-1,  # set below, in steps
        precision=t.precision, accelerator=t.accelerator,
        devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes, deterministic=t.deterministic,
        sync_batchnorm=t.sync_batchnorm,
        val_check_interval=config.val_every, check_val_every_n_epoch=None,  # every N steps, across epochs
        num_sanity_val_steps=0, log_every_n_steps=t.log_every_n_steps,
        logger=run_loggers(out, resume_step, config.to_dict()),
        callbacks=[*callbacks, RunProgress(config, out, live=live_bar(progress))],
        enable_checkpointing=False,  # RunCheckpoints keeps the files
        plugins=[AtomicCheckpointIO(), *_cluster_plugins()],
        use_distributed_sampler=False,  # EpochSampler shards by rank itself, and resumes
        enable_progress_bar=False, enable_model_summary=t.verbose, default_root_dir=out,
    )


def _cuda_chosen(config: RunConfig) -> bool:
    """Whether the run trains on CUDA GPUs: asked for (gpu, cuda) or `auto` with one present."""
    import torch

    accelerator = str(config.trainer.accelerator).lower()
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _trains_batch_norm(module) -> bool:
    import torch

    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training for m in module.modules())


def build_trainer(config: RunConfig, out: Path, datamodule, callbacks: list, progress: bool = True,
                  resume_step: int = 0) -> L.Trainer:
    """Lightning's Trainer as the config says, bounded in steps.

    Lightning's epoch count can run one ahead after a resume, so `max_epochs`
    becomes steps here: batches per epoch on each rank, known once the Trainer
    knows the world size.
    """
    try:
        trainer = _trainer(config, out, callbacks, progress, resume_step)
    except (MisconfigurationException, ValueError) as err:  # e.g. trainer.precision=16-bits, accelerator=gpu
        raise UserError(f"trainer: {' '.join(str(err).split())[:300]}") from None
    per_rank = datamodule.batches_per_epoch(trainer.world_size)
    if per_rank < 1:
        raise UserError(f"data: {len(datamodule.train_set)} training images cannot make a batch for each of "
                        f"{trainer.world_size} processes; use fewer devices or a smaller batch_size")
    trainer.fit_loop.epoch_loop.max_steps = total_steps(config, per_rank)
    return trainer


def _final(config: RunConfig, dm, module: EnsembleModule, tracker: RunCheckpoints, steps: int) -> dict:
    order = [ENSEMBLE, *module.names]
    final = {
        "experiment": config.experiment, "dataset": dm.train_set.kind, "mode": config.mode, "seed": config.seed,
        "classes": list(module.classes), "steps": steps,
        "results": {name: tracker.best[name] for name in order if name in tracker.best},
    }
    if tracker.extra:  # cross-domain: each model's scores on the other set at its best step on the main one
        final["val_extra"] = {loader: {name: scores[name] for name in order if name in scores}
                              for loader, scores in tracker.extra.items()}
    return final


RESUME_HINT = "the same command with resume=true"


def train(config: RunConfig, *, callbacks=(), progress: bool = True, resume_hint: str = RESUME_HINT) -> dict:
    """Train as `config` says; returns what was written to `final.json`. `progress`: a live bar where
    stderr is a terminal; without it, or elsewhere, a plain line every few steps (see iwu.engine.progress).
    `resume_hint`: what continues the run after a signal stops it, in the line that says so."""
    out = run_dir(config)
    with _run_lock(out), quiet_lightning(config.trainer.verbose, cpu_chosen=config.trainer.accelerator == "cpu"):
        return _train(config, out, callbacks, progress, resume_hint)


def _run_lock(out: Path):
    """One training process per run directory: two would interleave their metrics and replace each
    other's checkpoints. Held by the global rank 0 only; under DDP the other ranks share its run."""
    from lightning.pytorch.utilities import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        return contextlib.nullcontext()
    return owned(out / LOCK, f"{out}: another iwu train is writing this run (process {{holder}}); wait for it, "
                             "or give this one another out=DIR")


def _train(config: RunConfig, out: Path, callbacks, progress: bool, resume_hint: str = RESUME_HINT) -> dict:
    check_run_dir(config, out)
    remove_stale_temporaries(out / CHECKPOINTS)  # of a process killed mid-write; this one holds the run now
    if config.resume and (out / FINAL).exists():
        print(f"{out}: finished already; {FINAL} holds its results")
        try:
            return json.loads((out / FINAL).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as err:
            raise UserError(f"{out / FINAL}: unreadable ({type(err).__name__}); delete it to finish the run "
                            "again") from None
    import_user_modules(config.imports)
    check_weights(config)  # every missing file at once, before any data is prepared
    save_config(config, out / CONFIG)
    dm = build_datamodule(config)
    # seeded after the data are prepared: a run that builds the cache (and draws random numbers doing
    # so) starts from the same weights as one that finds it built
    L.seed_everything(config.seed, workers=True, verbose=False)
    module = build_module(config, dm)
    for name, member, spec in zip(module.names, module.members, config.members):
        if backbone_of(member) is None and not callable(getattr(member, "param_groups", None)):
            print(f"iwu train: member {name} has no .backbone or .encoder (nor param_groups): "
                  f"all of it trains at lr {spec.lr:g}")
    tracker = RunCheckpoints(out / CHECKPOINTS)
    last = out / CHECKPOINTS / LAST
    resume_from = last if config.resume and last.exists() else None
    if config.model.init_from and resume_from is None:  # a resumed run has its own weights
        init_members(module, config.model.init_from, strict=config.model.init_strict)
    check_distributed(config, slurm_tasks_here(), _cuda_chosen(config), batch_norm=_trains_batch_norm(module))
    trainer = build_trainer(config, out, dm, [tracker, StartData(dm), *callbacks], progress,
                            resume_step=_resume_step(resume_from, config, module.classes) if resume_from else 0)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume_from, weights_only=True)
    except NonFiniteLoss as err:
        kept = ", ".join(str(p) for p in (last, last.parent / BEFORE_NONFINITE) if p.exists())
        raise UserError(f"{err} (kept: {kept}); try a lower learning rate or trainer.precision=32-true") from None
    except SystemExit as err:  # Lightning's answer to SIGTERM and to Ctrl-C: exit status 0 and 1
        raise _stopped(err, out, trainer.global_step, last, resume_hint) from None
    if module.validated_step != trainer.global_step:  # the last steps since a validation count too
        trainer.validate(module, datamodule=dm, verbose=False)
        trainer.save_checkpoint(last, weights_only=False)  # and the state they reached, as at any validation
    final = _final(config, dm, module, tracker, trainer.global_step)
    if trainer.is_global_zero:
        save_curves(out / METRICS, out / CURVES,
                    title=run_title(config, f"training, validated on {final['dataset']}/val"), mode=config.mode)
        atomic_write_json(out / FINAL, final)
    return final


def _stopped(err: SystemExit, out: Path, step: int, last: Path, resume_hint: str) -> Stopped:
    """The signal that stopped `trainer.fit`, as one line and its shell exit status.

    Lightning raises SIGTERMException (a SystemExit with status 0) on SIGTERM, and on Ctrl-C swallows the
    KeyboardInterrupt, ignores SIGINT from then on and exits with 1; neither says the run is unfinished.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning left Ctrl-C ignored
    if isinstance(err, SIGTERMException):
        name, status = "SIGTERM", 143
    elif isinstance(err.__context__, KeyboardInterrupt):
        name, status = "Ctrl-C", 130
    else:
        raise err  # not a signal: someone's own exit
    kept = f"from its checkpoint ({last})" if last.exists() else "from the start (no checkpoint yet)"
    return Stopped(f"{out}: stopped by {name} at step {step}, unfinished; {resume_hint} continues it {kept}",
                   status)
