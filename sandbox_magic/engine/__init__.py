"""The engine: compiling, namespaced modules, in-place transactional reloads, versions.

Pure Python: nothing here imports IPython, ipywidgets or comm.  The live-state
layer (``sandbox_magic.live``) joins a reload as a participant
(``engine.reload.PARTICIPANTS``); the engine does not import it.
"""

from .interpreter import check_supported

check_supported()   # before anything relies on the GIL (free-threaded builds are refused)
