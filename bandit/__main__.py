"""``python -m bandit`` does what the ``bandit`` command does."""

from bandit.cli import main

raise SystemExit(main())
