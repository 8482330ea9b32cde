import subprocess
import sys

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
