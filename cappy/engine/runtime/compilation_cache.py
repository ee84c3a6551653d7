"""JAX's persistent compilation cache, on for cappy's commands: a later process loads the
programs an earlier one compiled instead of compiling them again (about a second per
command on a CPU with the benchmark's small model; more with larger models and on GPUs).

A cached program is the same compiled program, so results do not change. Where it is
kept: `$CAPPY_CACHE_DIR/jax/<machine>` (default `~/.cache/cappy`), `<machine>` a hash of
the processor's model and instruction-set flags: XLA compiles for the host's CPU
features, and JAX's own cache key does not hold them, so a home folder shared by
different machines never hands one machine's program to another. At most
MAX_CACHE_BYTES, the least recently used dropped first. `CAPPY_COMPILATION_CACHE=0`
switches it off; a `JAX_COMPILATION_CACHE_DIR` of the user's own is left to JAX.
"""

import hashlib
import os
import platform

MAX_CACHE_BYTES = 2 * 1024 ** 3
MIN_COMPILE_SECONDS = 0.2  # programs that compile faster are not worth a file read
OFF = ("0", "off", "false", "no")


def machine_fingerprint():
    """A short hash of what a CPU program depends on beyond JAX's cache key."""
    facts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            seen = set()
            for line in file:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("model name", "flags", "features", "cpu implementer", "cpu part") \
                        and key not in seen:
                    seen.add(key)
                    facts.append(line.strip())
    except OSError:
        facts.append(platform.processor())
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]


def cache_folder():
    """Where this machine's programs are kept, or None when the cache is off."""
    if os.environ.get("CAPPY_COMPILATION_CACHE", "1").strip().lower() in OFF:
        return None
    root = os.environ.get("CAPPY_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "cappy")
    return os.path.join(root, "jax", machine_fingerprint())


def enable_compilation_cache():
    """Switch the cache on for this process (before its first compilation); returns the
    folder, or None when it is off, set by the user for JAX, or cannot be written."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None  # the user's own: JAX reads it
    folder = cache_folder()
    if folder is None:
        return None
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile as without a cache
    if not os.access(folder, os.W_OK):
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(
        os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", MIN_COMPILE_SECONDS)))
    jax.config.update("jax_compilation_cache_max_size", MAX_CACHE_BYTES)
    return folder
