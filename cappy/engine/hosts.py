"""Several hosts: JAX's multi-process runtime, set up by Redco's Deployer."""

MULTIHOST_FLAGS = ("n_processes", "host0_address", "host0_port", "process_id",
                   "n_local_devices")


def add_multihost_arguments(parser):
    """The Deployer's multi-host flags, the same on every entry script."""
    group = parser.add_argument_group("several hosts (JAX's multi-process runtime via Redco)")
    group.add_argument("--n_processes", type=int, default=None,
                       help="number of hosts (processes) in the run")
    group.add_argument("--host0_address", default=None, help="address of host 0, the coordinator")
    group.add_argument("--host0_port", type=int, default=None, help="port of host 0")
    group.add_argument("--process_id", type=int, default=None,
                       help="this host's index, 0 to n_processes - 1")
    group.add_argument("--n_local_devices", type=int, default=None,
                       help="devices this host uses (None: all)")
    return group


def multihost_kwargs(args):
    """Redco Deployer's multi-host flags, passed through only when set."""
    return {name: getattr(args, name) for name in MULTIHOST_FLAGS
            if getattr(args, name, None) is not None}
