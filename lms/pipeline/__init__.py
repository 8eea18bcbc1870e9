"""The request pipeline every API surface translates onto (see pipeline.py for the path of one request)."""

from lms.pipeline.inputs import ChatInput, CompletionInput
from lms.pipeline.outcome import Outcome, Usage
from lms.pipeline.pipeline import Generation, Pipeline

__all__ = ["ChatInput", "CompletionInput", "Generation", "Outcome", "Pipeline", "Usage"]
