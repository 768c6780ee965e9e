"""A trained run at work: its models loaded, evaluated on a dataset, predicting images, writing masks."""
