"""benchmark.py's subcommands, one file each, each with a run(args, trio).

Nothing under segm/ imports the scripts above it, so these files never import main.py,
model.py or load_data.py: benchmark.py imports them and hands them down as a Trio
(common.py), and a subcommand reaches a model as trio.model.build_model(...).
"""
