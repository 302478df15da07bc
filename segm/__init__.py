"""The parts beneath the three scripts, one job per file; nothing here imports a script above.

Read main.py, model.py and load_data.py first: they say which part does what.
"""
