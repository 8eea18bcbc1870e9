"""The public HTTP API: one package or module per surface (openai/, responses/, native/, anthropic.py), each a
translator onto the pipeline (lms/pipeline) or a conversation turn (lms/conversation); surfaces never import each
other. Shared plumbing: http.py (bodies, SSE, disconnects), errors.py (error kinds to OpenAI's wire shape),
context.py (what a route takes from the app), app.py (the assembly)."""
