"""``python -m multimood.data.synthetic {mesc,dfew} --out DIR``: the same as ``multimood synth``."""

from multimood.data.synthetic.cli import main

raise SystemExit(main())
