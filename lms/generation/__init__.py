"""Engine-independent generation: the internal request and event model, chat templates, text streaming."""
