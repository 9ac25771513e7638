"""Start-up: the command line does not import torch, transformers or other heavy libraries until
a command needs them, and the thread count from CLTRACE_NUM_THREADS still reaches torch."""

import os
import subprocess
import sys


def _python(code: str, **env: str) -> str:
    full = {**os.environ, **env}
    full.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_help_does_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from cltrace.cli import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    rc = run(['--help'])\n"
        "print(rc, 'torch' in sys.modules)"
    )
    assert _python(code, CLTRACE_NUM_THREADS="1") == "0 False"


# each costs from tens of milliseconds (numpy, safetensors) to seconds (torch, transformers'
# modeling code) at import; a help text or `import cltrace` needs none of them
HEAVY = ("torch", "transformers", "safetensors", "numpy", "tokenizers", "matplotlib", "scipy")


def _imported_after(code: str) -> list[str]:
    probe = (
        "import sys, contextlib, io\n"
        f"{code}\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = _python(probe, CLTRACE_NUM_THREADS="1")
    return [m for m in out.rpartition("\n")[2].split(",") if m]


def test_help_texts_and_the_package_import_no_heavy_library():
    # `--help` exits through SystemExit in typer for sub-commands; the probe catches it
    for args in (["--help"], ["attribute", "--help"], ["pie", "--help"]):
        code = (
            "from cltrace.cli import run\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            f"    run({args!r})"
        )
        assert _imported_after(code) == [], args
    assert _imported_after("import cltrace") == []


def test_thread_count_reaches_torch_imported_later_and_earlier():
    later = (
        "from cltrace._threads import configure_threads\n"
        "configure_threads()\n"
        "import torch\n"
        "print(torch.get_num_threads())"
    )
    earlier = "import torch\n" + later
    assert _python(later, CLTRACE_NUM_THREADS="1") == "1"
    assert _python(earlier, CLTRACE_NUM_THREADS="1") == "1"
