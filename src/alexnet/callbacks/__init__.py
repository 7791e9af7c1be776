"""Lightning and Hydra callbacks, one concern a file (conf/callbacks/, conf/hydra/default.yaml).

- ``throughput.ImageThroughput``: training images per second
- ``history.MetricHistory``: every epoch's metrics, for summary.json
- ``stop_at_target.StopAtTarget``: ends a Fig. 1 run once it has measured what it is for
- ``run_guard.RunGuard``: signals, non-finite losses, random states, ``last.ckpt``
- ``wandb_media.WandbMedia``: conv1 kernels and the run's config to wandb
- ``check_writable.CheckWritable``: Hydra's: the run directory is writable before Hydra makes it
"""
