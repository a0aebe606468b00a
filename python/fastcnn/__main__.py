"""`python -m fastcnn`: the `fastcnn` command (see fastcnn.cli)."""
from .cli import main

raise SystemExit(main())
