"""What the entry points run with a composed configuration: a training job (``train``) and an
evaluation (``evaluate``), each checking everything it can first, building second, running third
and recording last.

- ``config_checks``: the configuration's mistakes, found before any data are read (no torch)
- ``checks``: what needs more than the values: the parallel layout, the record's path
- ``resume``: the checkpoint a run resumes from, checked before it is used
- ``build``: data, network, optimizer and trainer from the configuration
- ``train``, ``evaluate``: the jobs themselves
"""
