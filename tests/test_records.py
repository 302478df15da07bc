"""Every figure table in README.md and RESULTS.md is its record rendered (segm/records.py)."""
import json
import shutil
import subprocess

import pytest

from segm import records
from segm.errors import UsageError


def test_the_documents_show_every_record_as_it_is():
    published = records.load()
    assert published, "no published records"
    assert records.differences(published) == []


def test_a_planted_difference_names_the_document_and_the_figure(tmp_path):
    for document in records.DOCUMENTS:
        shutil.copy(records.ROOT / document, tmp_path / document)
    published = records.load()
    shown = {(doc, name) for doc in records.DOCUMENTS
             for name, _ in records.BLOCK.findall((tmp_path / doc).read_text())}
    name = sorted(figure for _, figure in shown if figure != records.SUMMARY)[0]
    planted = json.loads(json.dumps(published))
    planted[name]["rows"][0][-1] = "planted"
    assert records.differences(planted, tmp_path) == [
        (doc, figure) for doc in records.DOCUMENTS for figure, _ in
        records.BLOCK.findall((tmp_path / doc).read_text()) if figure == name]
    records.render_all(planted, tmp_path)  # rendering again mends the documents
    assert records.differences(planted, tmp_path) == []


def test_every_published_record_is_shown_and_every_shown_figure_has_a_record():
    shown = {name for doc in records.DOCUMENTS
             for name, _ in records.BLOCK.findall((records.ROOT / doc).read_text())}
    assert set(records.load()) <= shown
    with pytest.raises(UsageError, match="figure 'nowhere'"):
        records.render_document("<!-- figure nowhere -->\nx\n<!-- /figure -->", {})


def test_a_record_renders_its_cells_and_provenance():
    made = {"figure": "f", "command": "python benchmark.py x", "commit": "abc1234",
            "date": "2026-01-01", "machine": {"cpu": "CPU", "cores": 2,
                                              "float32_matmul_gflops": 250},
            "caption": "One sentence.", "columns": ["model", "parameters", "IoU"],
            "rows": [["fcn", 6582, "0.894"]], "headline": ["IoU", "0.894"], "section": "A B"}
    text = records.render(made)
    assert "`python benchmark.py x`" in text and "code abc1234, 2026-01-01, 2 cores of CPU, float32 matmul peak 250" in text
    assert "| fcn | 6,582 | 0.894 |" in text and text.startswith(
        "`python benchmark.py x`. One sentence.\n")
    assert "| IoU | 0.894 | `python benchmark.py x` | [A B](#a-b) |" in records.render_summary(
        {"f": made})
    page = ("## Summary\n<!-- figure summary -->\n<!-- /figure -->\n## Where it is shown\n"
            "<!-- figure f -->\n<!-- /figure -->\n")
    assert records.sections(page) == {"summary": "Summary", "f": "Where it is shown"}
    assert "[Where it is shown](#where-it-is-shown) |" in records.render_document(
        page, {"f": made})  # the heading the figure sits under, not the record's own


def test_publish_copies_only_the_pictures_a_page_shows(tmp_path, monkeypatch):
    for document in records.DOCUMENTS:
        (tmp_path / document).write_text("<!-- figure f -->\n<!-- /figure -->\n"
                                         "![f](im/figures/shown.png)\n")
    (tmp_path / "im" / "figures" / "records").mkdir(parents=True)
    monkeypatch.setattr(records, "ROOT", tmp_path)
    monkeypatch.setattr(records, "PUBLISHED", tmp_path / "im" / "figures" / "records")
    made = {"figure": "f", "command": "python benchmark.py x", "commit": "abc", "date": "d",
            "machine": {"cpu": "c", "cores": 2}, "caption": "", "columns": ["a"],
            "rows": [[1]], "headline": None, "section": ""}
    records.write(made, tmp_path / "bench")
    for name in ("shown.png", "unseen.png"):
        (tmp_path / "bench" / name).write_bytes(b"png")
    records.publish(tmp_path / "bench", ["f"], [tmp_path / "bench" / "shown.png",
                                               tmp_path / "bench" / "unseen.png"])
    assert sorted(p.name for p in (tmp_path / "im" / "figures").glob("*.png")) == ["shown.png"]


def test_publish_refuses_a_figure_no_page_shows_and_one_another_command_made(tmp_path):
    name, command = "compare_regions-regions_offset", "python benchmark.py compare --models " \
        "regions,regions_offset"
    made = dict(records.load()[name], figure="nowhere")
    records.write(made, tmp_path)
    with pytest.raises(UsageError, match="no page shows figure nowhere"):
        records.publish(tmp_path, ["nowhere"])
    other = dict(records.load()[name], command=command + " --seeds 0")
    records.write(other, tmp_path)
    with pytest.raises(UsageError, match=f"was made by `{command}`"):
        records.publish(tmp_path, [name])
    assert records.load()[name]["command"] == command


def test_the_code_version_marks_changed_code_but_not_the_documents_or_figures(tmp_path,
                                                                                monkeypatch):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    (tmp_path / "im" / "figures").mkdir(parents=True)
    for name in ("model.py", "README.md", "RESULTS.md", "im/figures/a.png"):
        (tmp_path / name).write_text("first")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    monkeypatch.setattr(records, "ROOT", tmp_path)
    clean = records.commit()
    assert clean and "+" not in clean
    for name in ("README.md", "RESULTS.md", "im/figures/a.png"):
        (tmp_path / name).write_text("a new figure's marker")
    (tmp_path / "notes.txt").write_text("untracked")
    assert records.commit() == clean
    (tmp_path / "model.py").write_text("changed")
    assert records.commit() == clean + "+changes"
