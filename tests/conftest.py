"""Test setup: 8 simulated CPU devices and a shared compilation cache.

The flags must be set before JAX initialises its backends. The persistent
compilation cache is shared by the xdist workers and by the subprocesses the
fault and notebook tests start, so a program one of them compiled is loaded
rather than compiled again (JAX keys entries by program, flags and version).
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"alphallm-tests-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
