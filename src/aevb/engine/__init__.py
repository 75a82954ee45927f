"""The one training loop and what it stands on: devices, batches, checkpoints, resume, the run directory, data parallelism, memory checks."""
