"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.slow
def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:  # later blocks build on earlier ones, as a reader would run them
        exec(compile(block, str(README), "exec"), namespace)
    assert (tmp_path / "runs" / "mine" / "model.safetensors").is_file()
    assert (tmp_path / "vgg-half.onnx").is_file()
    assert namespace["two"].active_profile == 0
    outcome, data = namespace["outcome"], namespace["data"]
    assert len(outcome.predictions) == len(data.test_y) and outcome.accuracy(data.test_y) > 0.3
    assert namespace["cascade"].graph().successors == [[1], []]
    assert namespace["result"].logits.shape == (4, 10) and namespace["point"].macs_ratio <= 0.5


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, flags=re.S).group(1)
    assert first_block.splitlines()[0].startswith("make demo")
    assert first_block.splitlines()[1].startswith("make test")
