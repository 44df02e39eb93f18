"""`python -m trainer` is `mnist-train`."""

from trainer.cli import main

raise SystemExit(main())
