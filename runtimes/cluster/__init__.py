"""Models on a Ray Serve cluster: the replicas run the same engines as local workers (replica.py), a local worker
process drives them as its engine (engine.py), and control.py answers `lms cluster status` for the daemon, which
itself never imports Ray."""
