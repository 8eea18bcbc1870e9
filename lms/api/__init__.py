"""The public HTTP API: one module per surface, all translating onto lms.generation.request."""
