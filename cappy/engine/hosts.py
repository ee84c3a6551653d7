"""Several hosts: JAX's multi-process runtime, set up by Redco's Deployer."""

import dataclasses

from cappy.engine.config import add_fields, setting

GROUP = "several hosts (JAX's multi-process runtime via Redco)"


@dataclasses.dataclass
class HostSettings:
    """The Deployer's multi-host settings, the same on every entry point (None: unset)."""
    n_processes: int | None = setting(None, "number of hosts (processes) in the run",
                                      type=int, group=GROUP)
    host0_address: str | None = setting(None, "address of host 0, the coordinator",
                                        type=str, group=GROUP)
    host0_port: int | None = setting(None, "port of host 0", type=int, group=GROUP)
    process_id: int | None = setting(None, "this host's index, 0 to n_processes - 1",
                                     type=int, group=GROUP)
    n_local_devices: int | None = setting(None, "devices this host uses (None: all)",
                                          type=int, group=GROUP)


MULTIHOST_FLAGS = tuple(field.name for field in dataclasses.fields(HostSettings))


def add_multihost_arguments(parser):
    """The multi-host flags, for a parser not made from a configuration dataclass."""
    add_fields(parser, HostSettings)


def multihost_kwargs(config):
    """Redco Deployer's multi-host settings, passed through only when set."""
    return {name: getattr(config, name) for name in MULTIHOST_FLAGS
            if getattr(config, name, None) is not None}
