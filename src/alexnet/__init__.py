"""A faithful reproduction of AlexNet (Krizhevsky, Sutskever and Hinton, NIPS 2012).

The package, layer by layer (each imports only from the layers above it):

- ``names``, ``exits``, ``provenance``: the metric and arm names, the exit statuses with the
  policy that maps what went wrong to them, and the commit a result came from;
- ``models``: the networks (torch only);
- ``data``: datasets, their preparation and transforms (knows nothing of the model);
  ``data.registry`` is the one table of data sources;
- ``training``: the LightningModule that joins a network to its data, the optimizer, parallel
  layouts, speed switches, checkpoints, summary.json, signals and random states;
- ``callbacks``: every Lightning (and Hydra) callback, one a file;
- ``jobs``: what the entry points run: check, build, run, record (``train``, ``evaluate``);
- ``analysis``: what reads results (summary.json, checkpoints): the study, its report beside the
  paper's claims, the paper's figures;
- ``benchmarks``: speed measured side by side;
- ``resolvers``: the config resolvers, registered by every entry point.

The entry points themselves are ``src/*.py`` and ``ablations/report.py``; configs in ``conf/``.
"""
