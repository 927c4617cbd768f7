"""Every command line in README.md works as written (issue 17, deliverable 4): each
`python -m bench ...` (also under torchrun), `make run ARGS="..."` and `python -m reports ...` is
parsed and dry-run: the app's own start-up checks compose the config with Hydra, type and check
it, check the suite's params and the run directory, print the plan and exit 0, with nothing
loaded or sampled (`dry_run=true`). Placeholders (PATH_OR_ID, REF_DIR, FILE, samples.npz,
/shared/...) become real temporary files and folders."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def code_block_lines(text: str) -> list[str]:
    """The lines of the fenced code blocks, continuation lines (trailing backslash) joined."""
    lines: list[str] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
    return lines


def strip_comment(line: str) -> str:
    return re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


def bench_commands() -> list[str]:
    """The argument strings of every `python -m bench` run in the README (torchrun, srun, make run)."""
    found = []
    for line in code_block_lines(README):
        match = re.search(r"(?:^|\s)(?:python|torchrun.*?)\s+-m bench(?=\s|$)(.*)$", strip_comment(line))
        if match:
            found.append(match.group(1).strip())
    found += re.findall(r'make run ARGS="([^"]*)"', README)
    return found


def reports_commands() -> list[str]:
    return [m.group(1).strip() for line in code_block_lines(README)
            if (m := re.search(r"python -m reports(?=\s|$)(.*)$", strip_comment(line)))]


def test_the_readme_has_the_commands_it_is_checked_for():
    commands = bench_commands()
    assert len(commands) >= 12, commands
    assert any("-m " in c or c.startswith("-m") for c in commands)            # multiruns
    assert any("suite=guidance_sweep" in c for c in commands)
    assert reports_commands()


@pytest.fixture
def placeholders(tmp_path: Path) -> dict[str, str]:
    """Real stand-ins for the README's placeholders. A dry run opens every input as the run will
    (issue 26): the model folder's model_index.json (its classes, not weights) and an image in
    the reference folder."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                       "scheduler": ["diffusers", "PNDMScheduler"]}))
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(refs / "0.png")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    samples = tmp_path / "samples.npz"
    np.savez(samples, np.zeros((2, 32, 32, 3), np.uint8))
    return {"PATH_OR_ID": str(model), "REF_DIR": str(refs), "FILE": str(prompts), "samples.npz": str(samples),
            "/shared/": f"{tmp_path}/shared/"}


def substitute(command: str, placeholders: dict[str, str]) -> list[str]:
    for name, value in placeholders.items():
        command = re.sub(rf"(?<![\w/]){re.escape(name)}", value, command)
    return shlex.split(command)


@pytest.mark.parametrize("command", bench_commands())
def test_every_bench_command_line_in_the_readme_dry_runs(command, placeholders, capsys, monkeypatch, tmp_path):
    from bench.app import preflight
    if "hydra/launcher=joblib_local" in command:
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    if "hydra/launcher=slurm" in command:
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    monkeypatch.chdir(tmp_path)          # relative run directories (outputs/...) are made here, if at all
    with pytest.raises(SystemExit) as stop:
        preflight([*substitute(command, placeholders), "dry_run=true"])
    out = capsys.readouterr()
    assert stop.value.code == 0, out.err
    assert "dry run:" in out.out and "job 0: suite:" in out.out, out.out
    assert not list(tmp_path.glob("outputs/*")) and not list(tmp_path.glob("multirun/*"))   # nothing written


@pytest.mark.parametrize("command", reports_commands())
def test_every_reports_command_line_in_the_readme_parses(command, placeholders):
    from reports.__main__ import build_parser
    args = build_parser().parse_args(substitute(command, placeholders))
    assert args.run_dirs


def test_a_dry_run_names_the_plan_of_every_job(capsys, tmp_path, monkeypatch):
    from bench.app import preflight
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        preflight(["-m", "suite=guidance_sweep", "guidance_scale=1,2", "suite.n=8", "dry_run=true"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert "dry run: 2 job(s)" in out
    jobs = [line for line in out.splitlines() if line.startswith("job ")]
    assert "guidance_scale: 1.0" in jobs[0] and "guidance_scale: 2.0" in jobs[1]
    assert all("suite: guidance_sweep" in job and "n: 8" in job for job in jobs)


def test_a_dry_run_refuses_a_bad_line_with_exit_2(capsys):
    from bench.app import preflight
    with pytest.raises(SystemExit) as stop:
        preflight(["suite=guidance_sweep", "sampler.name=euler", "dry_run=true"])
    assert stop.value.code == 2
    assert "sampler.name" in capsys.readouterr().err
