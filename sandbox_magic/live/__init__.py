"""Live state: servers, supervisors, tracked instances and their state migration.

Builds on the engine (it joins every reload transaction as a participant) and,
like the engine, imports nothing from IPython, ipywidgets or comm.
"""
