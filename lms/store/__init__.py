"""Models on disk: GGUF metadata, the catalog of downloaded models, imports."""
