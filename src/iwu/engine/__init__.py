"""Training: the LightningModule, the entry from a config to a run directory, the optimiser, what a run
keeps on disk (checkpoints, logs, progress) and the run directory's names."""
