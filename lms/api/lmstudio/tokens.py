"""The tokenizer endpoints of `llm` and `embedding` (tokenize, countTokens: raw text, no chat template, as the
SDKs' model.tokenize() and model.count_tokens() send it) and the `llm` namespace's applyPromptTemplate (the chat
history under the model's own chat template, rendered without generating)."""

from __future__ import annotations

from lms.api.lmstudio.file_store import client_files
from lms.api.lmstudio.models import manager_of, resolve_loaded
from lms.api.lmstudio.prediction import function_tools, messages_of
from lms.api.lmstudio.session import Namespace, Session
from lms.errors import LmsError


def _input_string(parameter) -> str:
    value = parameter.get("inputString") if isinstance(parameter, dict) else None
    if not isinstance(value, str):
        raise LmsError.invalid("'inputString' must be a string.", "inputString")
    return value


def tokenizer_endpoints(namespace: Namespace) -> Namespace:
    """Add tokenize and countTokens to a model namespace (`llm` or `embedding`)."""
    domain = namespace.name

    async def tokens_of(session: Session, parameter) -> list[int]:
        text = _input_string(parameter)
        model = resolve_loaded(manager_of(session), domain, parameter.get("specifier"))
        return await session.app_state.pipeline.tokenize(model, text)

    async def tokenize(session: Session, parameter) -> dict:
        return {"tokens": await tokens_of(session, parameter)}

    async def count_tokens(session: Session, parameter) -> dict:
        return {"tokenCount": len(await tokens_of(session, parameter))}

    namespace.rpcs.update({"tokenize": tokenize, "countTokens": count_tokens})
    return namespace


async def apply_prompt_template(session: Session, parameter) -> dict:
    """The chat rendered as the model would see it; `opts` may drop the BOS and EOS text and add tool
    definitions (LM Studio's LLMTool is OpenAI's chat tool shape, which the templates read)."""
    if not isinstance(parameter, dict):
        raise LmsError.invalid("applyPromptTemplate needs a parameter.", "parameter")
    model = resolve_loaded(manager_of(session), "llm", parameter.get("specifier"))
    messages, _images = messages_of(parameter.get("history"), client_files(session.app_state).of(session.client_id))
    opts = parameter.get("opts") if isinstance(parameter.get("opts"), dict) else {}
    tools = [{"type": "function", "function": tool} for tool in function_tools(opts.get("toolDefinitions"))]
    omitted = {"bos_token": ""} if opts.get("omitBosToken") else {}
    omitted |= {"eos_token": ""} if opts.get("omitEosToken") else {}
    formatted = await session.app_state.pipeline.render_prompt(model, messages, tools or None, omitted)
    return {"formatted": formatted}
