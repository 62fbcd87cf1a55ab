"""One function per DVC stage: read inputs, call the library, write outputs atomically.

The scripts in ``pipelines/`` only parse arguments and call these.
"""
