"""`python -m fastcnn.demo`: the same as `fastcnn demo`."""
from . import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m fastcnn.demo"))
