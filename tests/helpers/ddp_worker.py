"""`python ddp_worker.py CONFIG OUT [NAN_STEP]`: a run with probes, for test_ddp.py.

Lightning starts the second process by running this file again with its rank
in the environment, so every rank records what it saw in OUT/probe_rank<r>.json:
a digest of all weights after each step, the names of the images it trained
on, the pixels it scored itself at each validation, and the scores the module
kept (after the reduction over ranks). With NAN_STEP, rank 1 alone feeds NaN
images at that step.
"""

import hashlib
import json
import sys

import lightning as L
import torch

from iwu.config.schema import load_config
from iwu.errors import UserError
from iwu.engine.train import train


class Probe(L.Callback):
    def __init__(self, out, nan_step):
        self.out, self.nan_step = out, nan_step
        self.record = {"digests": [], "names": [], "pixels": [], "latest": []}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.record["names"].append(list(batch["name"]))
        if trainer.global_rank == 1 and trainer.global_step + 1 == self.nan_step:
            batch["image"].fill_(float("nan"))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        digest = hashlib.sha256()
        for p in module.parameters():
            digest.update(p.detach().cpu().numpy().tobytes())
        self.record["digests"].append(digest.hexdigest())

    def on_validation_epoch_end(self, trainer, module):  # before the module's hook: this rank's own counts
        self.record["pixels"].append(int(module._confusion[0, -1].sum()))

    def on_validation_end(self, trainer, module):
        self.record["latest"].append(module.latest)

    def dump(self, rank):
        (self.out / f"probe_rank{rank}.json").write_text(json.dumps(self.record))


def main():
    from pathlib import Path

    config_path, out = sys.argv[1], Path(sys.argv[2])
    nan_step = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    config = load_config(config_path, [f"out={out / 'run'}"])
    probe = Probe(out, nan_step)
    try:
        train(config, callbacks=[probe], progress=False)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        probe.dump(torch.distributed.get_rank() if torch.distributed.is_initialized() else 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
