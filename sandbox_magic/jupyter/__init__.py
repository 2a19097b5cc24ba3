"""The Jupyter glue: magics, the ipywidgets panel, the comm protocol of the sidebar.

The only layer that imports IPython, ipywidgets and comm; it uses the engine
through the public API (``sandbox_magic.api``).
"""
