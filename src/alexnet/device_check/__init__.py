"""The prepared device check: every GPU claim of this version measured by one command
(``src/device_check.py``) in a few minutes of a lent GPU.

- :mod:`.runner`: runs each step as a subprocess with a log and a time limit inside one budget,
  records what it gave (``results.json``, ``README.md``) and packs the folder for a machine that
  returns only a few files;
- :mod:`.steps`: the steps (environment, GPU tests, benchmarks, input pipeline, resume, the two
  columns on one GPU);
- :mod:`.cifar10`: the paper's CIFAR-10 studies on the JPEG tree, side by side on the GPU;
- :mod:`.carry`: what a bare device machine lacks, made here: the wheels of the packages its
  image does not hold, the CIFAR-10 archive, and the one command that runs it all there.
"""
