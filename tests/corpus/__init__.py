"""The real-code corpus: pure-Python libraries, as shipped, run in sandboxes (test_corpus.py).

``libraries`` says which libraries and versions, which of their tests, and which edit;
``fetch`` downloads and unpacks their sdists into a cache that is never committed;
``runner`` runs one library's own tests in a subprocess, plainly imported or in sandboxes;
``corpus_doctests`` is the pytest file that runs the docstring examples of live modules.
"""
