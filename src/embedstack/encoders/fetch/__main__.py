"""``python -m embedstack.encoders.fetch NAME...`` (used by ``make install``)."""

from embedstack.encoders.fetch import main

raise SystemExit(main())
