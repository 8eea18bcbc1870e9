"""Ollama's API (`/api/chat`, `/api/generate`, `/api/tags`, ...): a translator onto the request pipeline, so clients
that speak only Ollama (its Python and JavaScript clients, Open WebUI, Continue, Copilot) work unchanged."""
