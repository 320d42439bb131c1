"""Parse Prompt Bindings -> Bind Attributes -> KSampler through the real server."""
from tools.graphs import bind_graph
from tools.server import execution_error

from tools.host import TINY_CKPT_NAME as CKPT_NAME


def test_bind_attributes_writes_an_image_and_shows_the_parse(server):
    entry = server.run(bind_graph(CKPT_NAME, seed=41, steps=4, prefix="bind"))
    assert execution_error(entry) is None, execution_error(entry)
    assert server.images(entry)
    shown = entry["outputs"]["parse"]["text"][0]
    assert shown.startswith("sunflower <- pink | flamingo <- yellow")


def test_broken_edited_json_is_a_node_error(server):
    entry = server.run(bind_graph(CKPT_NAME, edited_json="{oops", seed=42, steps=2, prefix="badjson"))
    err = execution_error(entry)
    assert err is not None and err["node_type"] == "FaithfulParsePromptBindings"
    assert "not valid JSON" in err["exception_message"]


def test_prompt_with_no_attribute_is_a_node_error(server):
    entry = server.run(bind_graph(CKPT_NAME, prompt="a cat and a dog", seed=43, steps=2, prefix="noattr"))
    err = execution_error(entry)
    assert err is not None and "no noun with an attribute" in err["exception_message"]
