"""Tests start real processes through the same helpers as the demo (``app.local_stack``)."""

from app.local_stack import *  # noqa: F403
from app.local_stack import (  # noqa: F401  (names star-import leaves out or tools can't see)
    ADMIN_TOKEN,
    CATERINGS_TOKEN,
    CONSENT_TOKEN,
    PROJECT_ROOT,
    SAMPLE_SECRET,
    USERCOM_KEY,
    ServerProcess,
)
