"""``python -m bandit`` does what the ``bandit`` command does."""

from bandit.ops.cli import main

raise SystemExit(main())
