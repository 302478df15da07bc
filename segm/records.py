"""Figures on record: every measured table is a JSON record that a benchmark command wrote, and
README.md and RESULTS.md show it rendered between two markers, so a figure has one source:

    <!-- figure compare_ladder -->
    ...the table, rendered from im/figures/records/compare_ladder.json...
    <!-- /figure -->

A record holds the command that made it, the commit of the code, the date, the machine (its
CPU, cores and measured float32 matmul peak), a caption, the table's columns and rows, and a
headline for the summary table. `python benchmark.py render` rewrites the documents from the
records; tests/test_records.py fails when a document differs from them.
"""
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

from segm import files
from segm.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "im" / "figures" / "records"  # the records the documents show
DOCUMENTS = ("README.md", "RESULTS.md")
BLOCK = re.compile(r"<!-- figure (\S+) -->\n(.*?)<!-- /figure -->", re.S)
SUMMARY = "summary"  # the block that lists every record's headline


def commit():
    """The short hash of the code that runs, '+changes' when tracked files differ from it;
    the documents and published figures do not count (a new figure's marker goes in first)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                              text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  *[f":(exclude){path}" for path in (*DOCUMENTS, "im/figures")])
    return (head + ("+changes" if changed else "")) if head else "unknown"


def matmul_peak(dtype="float32", repeats=5, side=2048):
    """This machine's matmul rate in GFLOP/s as TensorFlow reaches it: the median of repeats
    (a bfloat16 product is summed in float32)."""
    from segm.tf_quiet import tf  # only a measurement needs TensorFlow
    a = tf.cast(tf.random.stateless_normal((side, side), (0, 0)), dtype)
    product = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, a), tf.float32)))
    product().numpy()  # traced and warm
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        product().numpy()
        seconds.append(time.perf_counter() - began)
    return 2 * side ** 3 / statistics.median(seconds) / 1e9


def machine():
    """The CPU's name, its cores and its measured float32 matmul peak."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": name, "cores": os.cpu_count(),
            "float32_matmul_gflops": round(matmul_peak())}


def make(name, command, columns, rows, caption="", headline=None, section="", seconds=None):
    """A record: rows are lists of cells (numbers are shown as given), headline a short value
    for the summary table, section the RESULTS.md heading it belongs under, and seconds what
    the whole command takes on this machine."""
    if any(len(row) != len(columns) for row in rows):
        raise ValueError(f"record {name}: every row needs {len(columns)} cells")
    return {"figure": name, "command": command, "commit": commit(),
            "date": datetime.date.today().isoformat(), "machine": machine(),
            "caption": caption, "columns": list(columns), "rows": [list(r) for r in rows],
            "headline": headline, "section": section,
            "seconds": None if seconds is None else round(seconds)}


def write(record, folder):
    """record as folder/records/NAME.json, atomically; returns the path."""
    path = Path(folder) / "records" / f"{record['figure']}.json"
    files.write_text(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")
    return path


def load(folder=PUBLISHED):
    """{figure name: record} of every record in folder."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))}


def duration(seconds):
    """'about 40 s', 'about 12 min', 'about 2.5 h': how long a command takes."""
    if seconds < 100:
        return f"about {seconds:.0f} s"
    if seconds < 6000:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


def _cell(value):
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def render(record):
    """The record as markdown: the command, how long it takes and the caption, the
    provenance, then the table."""
    m = record["machine"]
    peak = (f"float32 matmul peak {m['float32_matmul_gflops']} GFLOP/s"
            if m.get("float32_matmul_gflops") else "matmul peak not recorded")
    took = f" ({duration(record['seconds'])} here)" if record.get("seconds") else ""
    caption = f" {record['caption']}" if record.get("caption") else ""
    lines = [f"`{record['command']}`{took}.{caption}",
             f"<sub>code {record['commit']}, {record['date']}, {m['cores']} cores of {m['cpu']}, "
             f"{peak}</sub>", "",
             "| " + " | ".join(record["columns"]) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(record["columns"])))
             + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in record["rows"]]
    return "\n".join(lines) + "\n"


def anchor(heading):
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def sections(text):
    """{figure name: the '## ' heading it sits under} in a document's text."""
    found, heading = {}, ""
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif match := re.match(r"<!-- figure (\S+) -->", line):
            found[match.group(1)] = heading
    return found


def render_summary(records, where=None):
    """Every record with a headline: what it measures, the value, its command, its section:
    the heading the figure sits under in the document (where), else the record's own."""
    lines = ["| figure | value | command | section |", "|---|---|---|---|"]
    for name, record in records.items():
        if record.get("headline"):
            label, value = record["headline"]
            section = (where or {}).get(name) or record["section"]
            lines.append(f"| {label} | {value} | `{record['command']}` | "
                         f"[{section}](#{anchor(section)}) |")
    return "\n".join(lines) + "\n"


def render_document(text, records, document="the document"):
    """text with every figure block rendered again from records; an unknown name is refused."""
    def block(match):
        name = match.group(1)
        if name == SUMMARY:
            body = render_summary(records, sections(text))
        elif name in records:
            body = render(records[name])
        else:
            raise UsageError(f"{document} shows figure {name!r}, which has no record in "
                             f"{PUBLISHED}; run its benchmark command with --publish")
        return f"<!-- figure {name} -->\n{body}<!-- /figure -->"
    return BLOCK.sub(block, text)


def differences(records, root=ROOT):
    """[(document, figure)] of every block that differs from its rendering."""
    found = []
    for document in DOCUMENTS:
        text = (Path(root) / document).read_text()
        shown = dict(BLOCK.findall(text))
        fresh = dict(BLOCK.findall(render_document(text, records, document)))
        found += [(document, name) for name in shown if shown[name] != fresh[name]]
    return found


def render_all(records=None, root=ROOT):
    """Rewrite README.md and RESULTS.md from the records; returns the documents changed."""
    records = load() if records is None else records
    changed = []
    for document in DOCUMENTS:
        path = Path(root) / document
        text = path.read_text()
        fresh = render_document(text, records, document)
        if fresh != text:
            files.write_text(path, fresh)
            changed.append(document)
    return changed


def publish(folder, names, pictures=()):
    """Copy the records `names` (and pictures) from a benchmark's folder into im/figures and
    render the documents. Only a figure or picture a document shows is published, and a
    figure made by another command is never replaced."""
    published = load()
    shown = {figure for document in DOCUMENTS
             for figure, _ in BLOCK.findall((ROOT / document).read_text())}
    for name in names:
        if name not in shown:
            raise UsageError(f"no page shows figure {name}; put <!-- figure {name} --> and "
                             f"<!-- /figure --> where README.md or RESULTS.md should show it, "
                             f"then publish")
        record = json.loads((Path(folder) / "records" / f"{name}.json").read_text())
        old = published.get(name)
        if old and old["command"] != record["command"]:
            raise UsageError(f"the published figure {name} was made by `{old['command']}`; "
                             f"run that command with --publish to replace it")
        files.write_text(PUBLISHED / f"{name}.json", json.dumps(record, indent=1,
                                                                ensure_ascii=False) + "\n")
    pages = "".join((ROOT / document).read_text() for document in DOCUMENTS)
    for picture in pictures:  # only a picture a page shows: im/figures holds nothing unseen
        if f"im/figures/{Path(picture).name}" not in pages:
            continue
        with files.atomic_write(PUBLISHED.parent / Path(picture).name) as tmp:
            tmp.write_bytes(Path(picture).read_bytes())
    changed = render_all()
    print(f"published {', '.join(names)} in {PUBLISHED}"
          + (f"; rendered {' and '.join(changed)} again" if changed else ""))
