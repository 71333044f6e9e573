"""The README's Python examples run as written (keeps the user's door true)."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
@pytest.mark.compile_bound
def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    exec(compile("\n".join(blocks), str(README), "exec"), {})
