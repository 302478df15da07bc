"""segmentation.ipynb, every cell in order, in a new kernel.

    python -m segm.notebook            rewrites the notebook's committed outputs (under a minute)
    python -m segm.notebook --check    runs it and leaves the file as it is (CI); fails on an error

Needs requirements-dev.txt. The kernel starts in the project's folder, so the notebook's
training run goes to its ignored im/ wherever this is called from. Timestamps are left out and
each cell's printed streams merged, so running it again changes only what the code changed
(and the times that training prints).
"""
import argparse
import sys
import time
from pathlib import Path

from segm import files

NOTEBOOK = Path(__file__).resolve().parent.parent / "segmentation.ipynb"
CELL_TIMEOUT = 600  # seconds one cell may take: the training cell takes well under a minute


def execute(path=NOTEBOOK, write=True):
    """The notebook at path, run top to bottom in its own folder; written back if write.
    A cell's error raises nbclient's CellExecutionError, which shows the cell's traceback."""
    import nbclient
    import nbformat
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT, record_timing=False,
                            coalesce_streams=True,
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    if write:
        with files.atomic_write(path) as tmp:
            nbformat.write(notebook, tmp)
    return notebook


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="run it and leave the file as it is")
    args = parser.parse_args(argv)
    from nbclient.exceptions import CellExecutionError
    began = time.perf_counter()
    try:
        execute(write=not args.check)
    except CellExecutionError as error:
        print(f"error: a cell of {NOTEBOOK.name} failed:\n{error}", file=sys.stderr)
        return 1
    print(f"{NOTEBOOK.name}: every cell ran, in {time.perf_counter() - began:.0f} s"
          f"{'' if args.check else '; its outputs are rewritten'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
