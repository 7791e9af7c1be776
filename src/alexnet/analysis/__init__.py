"""Tools that read results (summary.json and checkpoints), never training internals: the study,
its report beside the paper's claims, and the paper's figures."""
