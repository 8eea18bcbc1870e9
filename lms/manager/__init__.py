"""Loaded models: workers, their supervision, JIT loading and TTL."""
