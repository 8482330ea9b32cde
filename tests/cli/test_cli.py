import subprocess
import sys

import pytest

from cad_recode.cli import main


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: cad-recode" in capsys.readouterr().err


def test_console_script_reports_version():
    out = subprocess.run(
        [sys.executable, "-m", "cad_recode.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.strip().startswith("cad-recode ")



@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--lora_rank", "8"], "unknown flag '--lora_rank' (did you mean '--lora_r'?)"),
        (["train", "--use-qlora"], "unknown flag '--use-qlora' (did you mean '--use_qlora'?)"),
        (["train", "--use_qlor"], "unknown flag '--use_qlor' (did you mean '--use_qlora'?)"),
        (["train", "--confg=x.yaml"], "unknown flag '--confg' (did you mean '--config'?)"),
        (["exec", "prog.py", "--timout", "2"], "unknown flag '--timout' (did you mean '--timeout'?)"),
        (["data", "generate", "--num", "3", "--output_dir", "x", "--sed", "1"], "unknown flag '--sed' (did you mean '--seed'?)"),
        (["train", "--banana"], "unknown flag '--banana' (see --help)"),
    ],
)
def test_unknown_flags_are_one_line_naming_the_closest_flag(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(message) and "\n" not in err


def test_old_output_spellings_work_for_one_release_with_a_notice(tmp_path, capsys):
    """--out was the data and geometry verbs' spelling: it still works, says what to use instead, once."""
    target = tmp_path / "cube.py"
    assert main(["shapes", "cube", "--out", str(target)]) == 0
    assert target.read_text().startswith("import cadquery as cq")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cad-recode shapes: note: --out is deprecated and will be removed in the next release; use --output"]
    assert main(["data", "generate", "--num", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "use --output_dir" in err and "--num must be a positive integer" in err


def test_data_verbs_need_an_output_dir(capsys):
    assert main(["data", "generate", "--num", "3"]) == 2
    assert "--output_dir DIR is required" in capsys.readouterr().err
