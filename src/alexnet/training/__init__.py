"""The training runtime: the LightningModule that joins a network to its data, the optimizer and
schedule, parallel layouts, speed switches, checkpoints, summary.json, signals and random states."""
