"""The README's training-loop example runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_loop_trains_every_member():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 19, (2, 64, 64), generator=g)
    labels[:, :4] = 255
    loader = [(torch.randn(2, 3, 64, 64, generator=g), labels)] * 2
    namespace = {"loader": loader}
    exec(compile(code, str(README), "exec"), namespace)
    members, loss = namespace["members"], namespace["loss"]
    assert len(members) == 2 and torch.isfinite(loss)
    for member in members:  # every member received a gradient from its own loss
        head = member.classifier.classifier[-1].weight
        assert head.grad is not None and head.grad.abs().sum() > 0
