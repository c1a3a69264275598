"""`python worker.py` runs the worker, the same code as `remedium worker`."""

from remedium.cli.main import main

if __name__ == "__main__":
    import os
    import sys

    code = main(["worker"])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
