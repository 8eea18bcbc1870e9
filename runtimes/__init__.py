"""Inference runtimes. Each runs inside a worker process (runtimes.worker), never inside the daemon."""
