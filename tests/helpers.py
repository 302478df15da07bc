"""What the test files share: tiny settings, running main.py, and checks on a run folder."""
import hashlib
import signal
import subprocess
import sys
from pathlib import Path

import main
import model

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ["--canvas", "16", "--digit_size", "8", "--batch_size", "8", "--eval_images", "16",
          "--sample_rows", "2", "--model", "fcn"]
TINY = ["--source", "synthetic", *SHAPES]


def run_main(*args, timeout=300, cwd=None):
    """main.py in its own process, as a user runs it, from this test's folder (or cwd)."""
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def call_main(capsys, *args):
    """main.main in this process (no TensorFlow start-up to wait for): (status, stdout, stderr)."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        status = main.main([str(a) for a in args])
    finally:
        signal.signal(signal.SIGTERM, handler)  # main() makes SIGTERM a Ctrl-C; not pytest's
    out, err = capsys.readouterr()
    return status, out, err


def one_sentence(err):
    """The error line, after checking it is the only line and no traceback."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def says(err, *facts):
    """The one error sentence holds each fact (a file, a flag, a number): what a message test
    checks, so that rewording a sentence breaks no test."""
    sentence = one_sentence(err)
    missing = [str(fact) for fact in facts if str(fact) not in sentence]
    assert not missing, f"{missing} not in {sentence!r}"
    return sentence


def snapshot(folder):
    """{name: sha256} of every file in folder, hidden ones included."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).iterdir()) if p.is_file()}


def temporaries(folder):
    """Hidden files other than the lock: what an interrupted atomic write would leave."""
    return [p.name for p in Path(folder).iterdir() if p.name.startswith(".") and p.name != ".lock"]


def step_of(checkpoint):
    return int(model.load_model(checkpoint).optimizer.iterations.numpy())
