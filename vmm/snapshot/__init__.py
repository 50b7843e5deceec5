"""Snapshots: a paused VM to a state file and a memory file, and back.

format.py declares the state file (construct) and checks it on load;
memory_file.py writes guest RAM sparsely (whole or only the dirtied pages);
save.py gathers the state of a paused MicroVM; load.py checks a snapshot
against this host and applies it while the builder assembles the VM.
The public names are re-exported by vmm.persist.
"""
