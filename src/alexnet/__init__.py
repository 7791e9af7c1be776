"""A faithful reproduction of AlexNet (Krizhevsky, Sutskever and Hinton, NIPS 2012).

The package, layer by layer (each imports only from the layers above it):

- ``names``, ``exits``, ``provenance``: the metric and arm names, the exit statuses with the
  policy that maps what went wrong to them, and where the repository is and the commit a result
  came from;
- ``run_record``, ``claims``: summary.json read back (one reader for training, callbacks and
  analysis alike), and the paper's claims (``ablations/claims.yaml``);
- ``models``: the networks (torch only), and conv1's kernels as Fig. 3 shows them;
- ``data``: datasets, their preparation and transforms (knows nothing of the model);
  ``data.registry`` is the one table of data sources;
- ``training``: the LightningModule that joins a network to its data, the optimizer, parallel
  layouts, speed switches, checkpoints, summary.json, signals and random states;
- ``callbacks``: every Lightning (and Hydra) callback, one a file;
- ``jobs``: what the entry points run: check, build, run, record (``train``, ``evaluate``);
- ``analysis``: what reads results (summary.json, checkpoints): the study, its report beside the
  paper's claims, the paper's figures;
- ``benchmarks``: speed measured side by side;
- ``device_check``: the one command for a lent GPU, its steps run as subprocesses;
- ``resolvers``: the config resolvers, registered by every entry point.

Within a line the modules import from each other only as their docstrings say; tests/test_layers.py
reads this list and fails on an import that goes down it.

The entry points themselves are ``src/*.py`` and ``ablations/report.py``; configs in ``conf/``.
"""
