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
    assert [type(m).__name__ for m in members] == ["DeepLab", "Unet"]
    for member in members:  # every parameter of every member received a gradient from its own loss
        assert all(p.grad is not None for p in member.parameters())
        assert sum(p.grad.abs().sum() for p in member.parameters()) > 0


def _blocks_after(heading: str) -> list[str]:
    section = README.read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def _commands(block: str) -> list[list[str]]:
    import shlex

    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip().startswith(("iwu", "srun"))]


def test_readme_sweep_commands_are_valid(monkeypatch, capsys):
    from iwu.cli import main

    monkeypatch.chdir(README.parent)  # the configs/ paths as written; --dry-run writes nothing
    sweeps = [c for c in _commands(_blocks_after("## Sweeps")[0]) if c[1] == "sweep"]
    assert len(sweeps) == 3
    for command in sweeps:
        assert main([*command[1:], "--dry-run"]) == 0, capsys.readouterr().err
    assert "60 runs under runs/acdc30" in capsys.readouterr().out  # 30 seeds x 2 modes


def test_readme_slurm_script_matches_lightning_s_layout():
    from iwu.config.schema import load_config

    script = _blocks_after("## Many GPUs")[0]
    options = dict(re.findall(r"#SBATCH --([\w-]+)=(\S+)", script))
    command = _commands(script)[0]
    assert command[:3] == ["srun", "iwu", "train"]
    config = load_config(README.parent / command[3], command[4:])
    assert config.trainer.num_nodes == int(options["nodes"])
    assert config.trainer.devices == int(options["ntasks-per-node"]) == int(options["gpus-per-node"])
    assert config.trainer.strategy == "ddp" and config.resume


def test_inside_iwu_names_every_module_and_package():
    """The architecture section is a map of src/iwu: a module added or renamed must appear in it."""
    section = README.read_text().split("\n## Inside iwu\n", 1)[1].split("\n## ", 1)[0]
    package = README.parent / "src" / "iwu"
    names = {p.name for p in package.glob("*.py") if not p.name.startswith("__")}
    names |= {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    names |= {p.name for folder in package.iterdir() if (folder / "__init__.py").is_file()
              for p in folder.glob("*.py") if not p.name.startswith("__")}
    missing = sorted(n for n in names if not re.search(rf"(?<![\w/]){re.escape(n)}", section))
    assert not missing, f"not in README's 'Inside iwu': {missing}"
