"""Preloaded by a sandbox zygote in tests: an import that takes a minute (a cold torch import, exaggerated)."""

import time

time.sleep(60)
