"""A training interrupted at a chosen step, as a kill would, for the exact-resume tests."""

import lightning as L


class Crash(Exception):
    pass


class CrashAt(L.Callback):
    """Raises `Crash` before the step that would take the run to `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Crash
