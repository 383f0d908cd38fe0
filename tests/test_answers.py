import pytest

from archsmith.agents.answers import AnswerError, complete_items, extract_candidate, extract_fenced, extract_json


def test_fenced_block_with_chatter():
    answer = "Sure! Here it is:\n```text\nSuperConvK3BNRELU(3,8,1,1)\n```\nHope this helps."
    assert extract_fenced(answer) == "SuperConvK3BNRELU(3,8,1,1)"


def test_last_block_and_preferred_language():
    answer = "```python\nx = 1\n```\nand\n```json\n{\"a\": 1}\n```"
    assert extract_fenced(answer) == '{"a": 1}'
    assert extract_fenced(answer, ("python",)) == "x = 1"


@pytest.mark.parametrize("answer", ["", "   ", "```\nSuperConvK3BNRELU(3,8", "no code at all\nhere", "I cannot help with that"])
def test_unusable_answers_are_errors(answer):
    with pytest.raises(AnswerError):
        extract_candidate(answer)


def test_truncated_last_block_is_detected():
    with pytest.raises(AnswerError, match="not closed"):
        extract_fenced("```\nA\n```\nmore:\n```\nB(1,2")


def test_single_line_answer_is_a_candidate():
    assert extract_candidate("SuperConvK3BNRELU(3,8,1,1)\n") == "SuperConvK3BNRELU(3,8,1,1)"


def test_json_extraction():
    assert extract_json('Plan:\n```json\n{"plans": []}\n```') == {"plans": []}
    assert extract_json('blah {"a": {"b": 2}} blah') == {"a": {"b": 2}}
    with pytest.raises(AnswerError, match="not closed"):
        extract_json('{"a": 1')
    with pytest.raises(AnswerError):
        extract_json("[1, 2]")
    with pytest.raises(AnswerError, match="invalid JSON"):
        extract_json("{not json at all}")


def test_complete_but_broken_json_is_repaired():
    # Qwen2.5-Coder-0.5B closed its answer's fence one '}' short (nb201 benchmark, generation 3).
    answer = '```json\n{"plans": [{"parent_ids": ["c0007"], "operator": "edge", "idea": "x"}]\n```'
    assert extract_json(answer) == {"plans": [{"parent_ids": ["c0007"], "operator": "edge", "idea": "x"}]}


def test_objects_one_after_another_give_the_first():
    # Qwen2.5-Coder-0.5B closed "plans" after one plan and went on with bare plan objects.
    plan = '{"parent_ids": ["c0002"], "operator": "edge", "idea": "x"}'
    answer = f'```json\n{{"plans": [{plan}],\n{plan}],\n{plan}}}\n```'
    assert extract_json(answer)["plans"] == [{"parent_ids": ["c0002"], "operator": "edge", "idea": "x"}]


def test_json_cut_off_inside_is_not_repaired():
    with pytest.raises(AnswerError, match="invalid JSON"):
        extract_json('```json\n{"plans": [{"parent_ids": ["c1"]}, {"idea": "use dep')



def test_complete_items_of_a_cut_off_array():
    """Qwen2.5-Coder-0.5B ran on past the plans asked for until max_tokens cut it off mid-plan."""
    plan = '{"parent_ids": ["c0002"], "idea": "x, [y]"}'
    answer = f'```json\n{{\n  "plans": [\n    {plan},\n    {plan} ,\n    {{"parent_ids": ["c00'
    assert complete_items(answer, "plans") == [{"parent_ids": ["c0002"], "idea": "x, [y]"}] * 2


def test_complete_items_of_a_repeated_key_and_none():
    # The same model also repeated '"plans": [one plan]' until the limit.
    answer = '{"plans": [{"a": 1}],\n "plans": [{"a": 2}],\n "plans": [{"a"'
    assert complete_items(answer, "plans") == [{"a": 1}, {"a": 2}]
    assert complete_items('{"plans": []}', "plans") == []
    assert complete_items("no JSON here", "plans") == []
    assert complete_items('{"plans": [1, 2', "plans") == [1, 2]  # what an item is, the caller checks

NB201_CELL = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"


@pytest.mark.parametrize(
    "answer",
    [
        f"```\n{NB201_CELL}\n```",
        f"Here is the child:\n\n{NB201_CELL}\n\nIt adds a 1x1 convolution.",
        # the cell as a string literal in code, its first bar dropped (Qwen2.5-Coder-0.5B)
        f'```csharp\nclass A {{ string Cell() {{ return "{NB201_CELL[1:]}"; }} }}\n```',
        # the parent echoed first, then the child
        f"Parent: |none~0|+|none~0|none~1|+|none~0|none~1|none~2|\nChild:\n```\n{NB201_CELL}\n```",
        "```\n| nor_conv_1x1~0 |+| skip_connect~0 | avg_pool_3x3~1 |+| none~0 | nor_conv_3x3~1 | skip_connect~2 |\n```",
    ],
)
def test_a_space_finds_its_candidate_inside_the_answer(answer):
    from archsmith.tools.spaces.base import get_space

    space = get_space("nb201")
    assert space.canonical(extract_candidate(answer, space)) == NB201_CELL


def test_a_cell_shaped_but_invalid_answer_goes_to_the_verifier():
    from archsmith.tools.spaces.base import get_space

    space = get_space("nb201")
    wrong = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~2|+|none~0|nor_conv_1x1~1|"
    assert extract_candidate(f"```\n{wrong}\n```", space) == wrong
    # a doubled bar splits the text into shaped fragments: the whole block goes on, not a fragment
    doubled = "|nor_conv_3x3~2|+|skip_connect~3||none~0|nor_conv_1x1~4|+|skip_connect~5|"
    assert extract_candidate(f"```\n{doubled}\n```", space) == doubled


def test_an_answer_in_another_language_is_retried_with_the_expected_form():
    from archsmith.tools.spaces.base import get_space

    answer = "```python\nimport torch\n\nclass RandomNet(torch.nn.Module):\n    pass\n```"
    with pytest.raises(AnswerError, match="holds no nb201 candidate"):
        extract_candidate(answer, get_space("nb201"))
    assert extract_candidate(answer).startswith("import torch")  # without a space: the block, as before
