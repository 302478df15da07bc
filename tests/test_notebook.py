"""segmentation.ipynb as committed: a valid notebook, run top to bottom, its pictures and
printed figures in it, and no machine's folders in its code. (CI executes it: .ci/run.)"""
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "segmentation.ipynb"
PICTURES = ("data", "laplacian", "learning-curves", "samples")  # cell ids that must show a PNG
EQUALITIES = ("gcn-stencil", "dgcn-conv")  # cells that print "largest difference <number>"
MACHINE_PATHS = ("/work", "../shared")


def cells_by_id(nb):
    return {cell.id: cell for cell in nb.cells}


def missing_pictures(nb):
    """The cells of PICTURES that have no image/png output (or do not exist)."""
    cells = cells_by_id(nb)
    return [name for name in PICTURES if name not in cells or not any(
        "image/png" in output.get("data", {}) for output in cells[name].outputs)]


def largest_differences(nb):
    """{cell id: the largest difference it printed, or None}, for the cells of EQUALITIES."""
    cells, found = cells_by_id(nb), {}
    for name in EQUALITIES:
        text = "".join(output.get("text", "") for output in cells[name].outputs)
        match = re.search(r"largest difference (\S+)", text)
        found[name] = float(match.group(1)) if match else None
    return found


def run_problems(nb):
    """What shows the code cells were not run once, top to bottom, without error."""
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    problems = []
    if [cell.execution_count for cell in code] != list(range(1, len(code) + 1)):
        problems.append("execution counts are not 1, 2, ... in order")
    problems += [f"{cell.id} ends in {output.ename}" for cell in code for output in cell.outputs
                 if output.output_type == "error"]
    # timestamps change on every run: the regenerating command (see the last cell) omits them
    problems += [f"{cell.id} has execution timestamps" for cell in code
                 if "execution" in cell.metadata]
    return problems


def machine_paths(nb):
    """(cell id, path) for each code cell that names a folder of this machine."""
    return [(cell.id, path) for cell in nb.cells if cell.cell_type == "code"
            for path in MACHINE_PATHS if path in cell.source]


def test_the_notebook_is_valid_and_committed_run_with_its_pictures():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert len(nb.cells) <= 30
    assert run_problems(nb) == []
    assert missing_pictures(nb) == []
    differences = largest_differences(nb)
    assert all(value is not None and value < 1e-5 for value in differences.values()), differences
    assert machine_paths(nb) == []


def test_the_checks_catch_a_notebook_without_outputs_or_naming_a_machine_folder():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = cells_by_id(nb)
    cells["samples"].outputs = []
    cells["gcn-stencil"].outputs = [nbformat.v4.new_output(
        "stream", name="stdout", text="GraphConv ...: largest difference 3.0e-02\n")]
    cells["train"].source += "\nprint('/work/shared/data')"
    cells["evaluate"].execution_count = None
    cells["dgcn-conv"].metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
    cells["segment"].outputs.append(nbformat.v4.new_output(
        "error", ename="ValueError", evalue="planted", traceback=[]))
    assert missing_pictures(nb) == ["samples"]
    assert largest_differences(nb)["gcn-stencil"] == 3.0e-02
    assert machine_paths(nb) == [("train", "/work")]
    assert run_problems(nb) == ["execution counts are not 1, 2, ... in order",
                                "segment ends in ValueError", "dgcn-conv has execution timestamps"]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    assert missing_pictures(nb) == list(PICTURES)
    assert set(largest_differences(nb).values()) == {None}


def test_execute_runs_in_the_notebooks_folder_without_timestamps_and_fails_on_an_error(tmp_path):
    from nbclient.exceptions import CellExecutionError
    from segm import notebook
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "tiny.ipynb"
    cells = [nbformat.v4.new_code_cell("import os, time\nprint(os.getcwd(), flush=True)\n"
                                        "time.sleep(0.5)\nprint('two')"),
             nbformat.v4.new_code_cell("open('made.txt', 'w').write('x')")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    notebook.execute(path)
    ran = nbformat.read(path, as_version=4)
    assert [cell.execution_count for cell in ran.cells] == [1, 2]
    assert [output.text for output in ran.cells[0].outputs] == [f"{folder}\ntwo\n"]  # one stream
    assert all("execution" not in cell.metadata for cell in ran.cells)
    assert (folder / "made.txt").is_file() and not (tmp_path / "made.txt").exists()

    cells.append(nbformat.v4.new_code_cell("raise ValueError('planted')"))
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    before = path.read_bytes()
    with pytest.raises(CellExecutionError, match="planted"):
        notebook.execute(path)
    assert path.read_bytes() == before
