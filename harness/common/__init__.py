"""Infrastructure every part shares: the run directory's files, checkpoints, manifests, progress bars, Markdown."""
