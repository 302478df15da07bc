"""`benchmark.py params`: the parameter count of every model, as a markdown table."""


def run(args, trio):
    print(trio.model.parameter_table())
