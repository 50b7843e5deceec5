"""Coverage-guided fuzz targets (atheris) and the replay of their saved corpus.

Each ``fuzz_<name>.py`` module is a target: ``test_one_input(data: bytes)``
runs one case and raises (an AssertionError, or an error type the code
under test must never let out) only when the contract is broken. ``run.py``
drives a target under atheris (``make fuzz``); ``test_corpus_replay.py``
feeds every saved input back through its target as an ordinary test
(``make test``), with no fuzzing engine needed.
"""

TARGETS = ("mmio", "queue", "block", "console", "elf", "multiboot", "bzimage", "snapshot", "api")
