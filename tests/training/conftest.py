"""The training tests' conftest: only what pytest must not collect."""

# A script `test_distribute.py` runs in subprocesses (it splits the CPU before TensorFlow starts);
# importing it here (doctest collection) would start TensorFlow first.
collect_ignore = ["distributed_worker.py"]
