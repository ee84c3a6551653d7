"""Several hosts: JAX's multi-process runtime, joined before anything touches a device.

Every process runs the same command with `--n_processes N --host0_address ADDR
--process_id I`. Before JAX's own initialization, the processes meet at host 0's port
(`rendezvous`): process 0 listens, every other one connects and says who it is, and
process 0 answers once all N have come. JAX's coordinator, started next, aborts the
process with pages of C++ log when a peer never comes; this meeting turns the common
failures (no coordinator at that address, a process that never starts, the port
taken, two processes given one id) into one line naming the address and the process,
within `--host_timeout` seconds. The same timeout bounds how long JAX's heartbeats let a
silent peer go once the run is under way.

Only process 0 writes results; every process computes (README.md, "Several hosts").
"""

import contextlib
import dataclasses
import os
import socket
import threading
import time

from cappy.engine.config import add_fields, setting
from cappy.engine.errors import CappyError

GROUP = "several hosts (JAX's multi-process runtime)"
DEFAULT_PORT = 11111  # Redco's default, which the original release's runs used
HELLO = b"cappy-join"


@dataclasses.dataclass
class HostSettings:
    """The multi-host settings, the same on every entry point (None: unset)."""
    n_processes: int | None = setting(None, "number of processes (hosts) in the run",
                                      type=int, group=GROUP, at_least=1)
    host0_address: str | None = setting(None, "address of process 0's host, the coordinator",
                                        type=str, group=GROUP)
    host0_port: int | None = setting(None, f"port of the coordinator (None: {DEFAULT_PORT})",
                                     type=int, group=GROUP, at_least=1, at_most=65535)
    process_id: int | None = setting(None, "this process's index, 0 to n_processes - 1",
                                     type=int, group=GROUP, at_least=0)
    n_local_devices: int | None = setting(None, "devices this process uses (None: all)",
                                          type=int, group=GROUP, at_least=1)
    detect_cluster: bool = setting(False, "take the processes from the cluster's environment "
                                   "(SLURM's srun, Open MPI's mpirun, a Cloud TPU pod), as "
                                   "JAX detects them, instead of the flags above", group=GROUP)
    host_timeout: int = setting(300, "seconds a process waits for the others to join, and "
                                "gives a silent one once running, before it stops",
                                group=GROUP, at_least=1)


MULTIHOST_FLAGS = tuple(field.name for field in dataclasses.fields(HostSettings))


def add_multihost_arguments(parser):
    """The multi-host flags, for a parser not made from a configuration dataclass."""
    add_fields(parser, HostSettings)


def host_settings(config):
    """The HostSettings part of any configuration object or namespace (unset where absent)."""
    return HostSettings(**{name: getattr(config, name) for name in MULTIHOST_FLAGS
                           if getattr(config, name, None) is not None})


def join(config):
    """Start JAX's multi-process runtime when `config` asks for several processes; call it
    before any JAX computation. Nothing happens for one process or when already joined."""
    from cappy.engine.config import check_config

    settings = host_settings(config)
    check_config(settings)
    if settings.detect_cluster:
        return _join_detected_cluster(settings)
    n, pid = settings.n_processes, settings.process_id
    if n is None or n == 1:
        if pid not in (None, 0):
            raise CappyError(f"--process_id {pid} needs --n_processes above {pid}")
        return
    import jax

    if jax.distributed.is_initialized():
        return
    if settings.host0_address is None or pid is None:
        raise CappyError(f"--n_processes {n} needs --host0_address and --process_id")
    if not 0 <= pid < n:
        raise CappyError(f"--process_id must be 0 to {n - 1}, got {pid}")
    port = settings.host0_port or DEFAULT_PORT
    rendezvous(settings.host0_address, port, n, pid, settings.host_timeout)
    _initialize(settings, coordinator_address=f"{settings.host0_address}:{port}",
                num_processes=n, process_id=pid)


def _initialize(settings, **where):
    """JAX's runtime with this run's devices and timeouts; `where` names the processes
    (none: JAX detects them from the cluster's environment)."""
    import jax

    timeout = settings.host_timeout
    jax.distributed.initialize(
        local_device_ids=(None if settings.n_local_devices is None
                          else list(range(settings.n_local_devices))),
        initialization_timeout=timeout, heartbeat_timeout_seconds=timeout,
        shutdown_timeout_seconds=timeout, **where)
    _watch_for_process_0_stopping()


def _join_detected_cluster(settings):
    import jax

    given = [f"--{name}" for name in ("n_processes", "host0_address", "host0_port", "process_id")
             if getattr(settings, name) is not None]
    if given:
        raise CappyError(f"--detect_cluster takes the processes from the cluster; drop "
                         f"{', '.join(given)}")
    if jax.distributed.is_initialized():
        return
    try:
        _initialize(settings)
    except ValueError as error:  # JAX found no cluster to take the settings from
        raise CappyError(f"--detect_cluster: no cluster found in this process's environment "
                         f"(run it under srun, mpirun or on a Cloud TPU pod, or give the host "
                         f"flags): {str(error).splitlines()[0]}") from None


# ---- the meeting before JAX's coordinator starts ----------------------------------------

def rendezvous(address, port, n_processes, process_id, timeout):
    """All `n_processes` processes present at `address:port` within `timeout` seconds,
    or a CappyError naming the address, the process and what is missing."""
    who = f"process {process_id} of {n_processes}"
    deadline = time.monotonic() + timeout
    if process_id == 0:
        _gather_peers(port, n_processes, who, deadline, timeout)
    else:
        _join_coordinator(address, port, n_processes, process_id, who, deadline, timeout)


def _gather_peers(port, n_processes, who, deadline, timeout):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", port))
    except OSError as error:
        listener.close()
        raise CappyError(f"{who}: cannot listen on port {port} ({error.strerror}); another "
                         f"run may hold it: choose another --host0_port") from None
    listener.listen(n_processes)
    peers = {}
    try:
        while len(peers) < n_processes - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(range(1, n_processes)) - set(peers))
                raise CappyError(
                    f"{who}: process{'es' if len(missing) > 1 else ''} "
                    f"{', '.join(map(str, missing))} did not join at port {port} within "
                    f"{timeout} s (--host_timeout); start the same command on every host")
            listener.settimeout(left)
            try:
                connection, _ = listener.accept()
            except socket.timeout:
                continue
            peer = _read_hello(connection, deadline)
            if peer is None:  # not one of ours (a port scan, a stale client): ignore it
                connection.close()
                continue
            peer_id, peer_n = peer
            problem = (f"says the run has {peer_n} processes, not {n_processes}"
                       if peer_n != n_processes else
                       f"has an --process_id outside 1 to {n_processes - 1}"
                       if not 1 <= peer_id < n_processes else
                       "was given an --process_id another process has" if peer_id in peers
                       else None)
            if problem:
                _send(connection, f"refused: process {peer_id} {problem}")
                connection.close()
                raise CappyError(f"{who}: a process that calls itself {peer_id} {problem}")
            peers[peer_id] = connection
        for connection in peers.values():
            _send(connection, "go")
    finally:
        for connection in peers.values():
            connection.close()
        listener.close()


def _join_coordinator(address, port, n_processes, process_id, who, deadline, timeout):
    where = f"{address}:{port}"
    last_error = "no answer"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CappyError(f"{who}: no coordinator at {where} within {timeout} s "
                             f"(--host_timeout; last: {last_error}); is process 0 running, "
                             f"and is {address} reachable from this host?")
        try:
            connection = socket.create_connection((address, port), timeout=min(left, 5))
        except socket.gaierror as error:
            raise CappyError(f"{who}: --host0_address {address}: {error.strerror}") from None
        except OSError as error:
            last_error = error.strerror or type(error).__name__
            time.sleep(min(0.2, max(left, 0)))
            continue
        break
    try:
        _send(connection, f"{HELLO.decode()} {process_id} {n_processes}")
        answer = _read_line(connection, deadline)
    finally:
        connection.close()
    if answer == "go":
        return
    if answer is None:
        raise CappyError(f"{who}: the coordinator at {where} did not let the run start within "
                         f"{timeout} s (--host_timeout): not every process joined it")
    raise CappyError(f"{who}: the coordinator at {where} {answer}")


def _send(connection, text):
    try:
        connection.sendall(text.encode() + b"\n")
    except OSError:
        pass  # the other side is gone; it reports its own failure


def _read_line(connection, deadline):
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        connection.settimeout(left)
        try:
            chunk = connection.recv(256)
        except (socket.timeout, OSError):
            return None
        if not chunk or len(data) > 1024:
            return None
        data += chunk
    return data.decode(errors="replace").strip()


def _read_hello(connection, deadline):
    line = _read_line(connection, min(deadline, time.monotonic() + 10))
    parts = (line or "").split()
    if len(parts) != 3 or parts[0] != HELLO.decode():
        return None
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        return None


# ---- after the run has started ----------------------------------------------------------

LOST_PEER_SIGNS = ("Gloo", "NCCL", "Connection closed by peer", "Connection reset by peer",
                   "heartbeat", "coordination service")


def lost_peer_line(error):
    """The one line for an error that means another process is gone (a collective that
    failed because its peer closed the connection), or None for any other error."""
    import sys

    jax = sys.modules.get("jax")
    if jax is None or not jax.distributed.is_initialized():
        return None
    text = str(error)
    if not any(sign in text for sign in LOST_PEER_SIGNS):
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return (f"process {jax.process_index()} of {jax.process_count()}: lost contact with "
            f"another process ({first[:200]}); it has stopped or its host is unreachable: "
            f"see that process's output")


# ---- process 0 stopping on an error of its own ------------------------------------------
# Only process 0 writes, so only it meets a full disk or a locked output; it leaves at once
# (`leave_now`), and JAX's coordination agent in every other process, finding the
# coordinator gone, would abort that process with a C++ stack trace. So the others watch
# JAX's key-value store (which lives in process 0) for a word from process 0, and leave
# first, in one line, when it comes.

_STOP_KEY, _LEFT_KEY = "cappy/stop/{}", "cappy/left/{}"
_FINISHED = ""  # a process's own word to its watcher: the run ended here, stop watching
_ACK_SECONDS = 10  # how long process 0 waits for its peers to leave first
_watcher = None
_leaving = threading.Event()  # set by the watcher once process 0's word has come


def wait_if_leaving():
    """In a process leaving on process 0's word, block the calling thread: the watcher
    ends the process in a moment, and it alone speaks."""
    if _leaving.is_set():
        while True:
            time.sleep(1)


def _runtime_client():
    """JAX's coordination client of this run, or None (one process, or a JAX that keeps it
    elsewhere: then nothing is watched and errors end as before)."""
    try:
        from jax._src import distributed
    except ImportError:
        return None
    client = getattr(getattr(distributed, "global_state", None), "client", None)
    needed = ("key_value_set", "blocking_key_value_get")
    return client if all(hasattr(client, name) for name in needed) else None


def _watch_for_process_0_stopping():
    """In every process but process 0: a thread that waits for process 0's word, then says
    it in one line and leaves with process 0's exit code. At a normal exit the process
    tells its own watcher to stop before JAX shuts down (a thread still inside JAX's client
    at interpreter exit would abort it)."""
    global _watcher
    import atexit
    import json
    import sys

    import jax

    client = _runtime_client()
    me, count = jax.process_index(), jax.process_count()
    if client is None or me == 0 or _watcher is not None:
        return

    def watch():
        try:
            word = client.blocking_key_value_get(_STOP_KEY.format(me), 2**31 - 1)
        except Exception:  # the runtime is shutting down: nothing to report
            return
        if word == _FINISHED:
            return
        _leaving.set()  # from here on this thread must end the process, whatever happens
        code = 2
        try:
            stop = json.loads(word)
            code = int(stop["code"])
            sys.stderr.write(f"error: process {me} of {count}: process 0 stopped, so this "
                             f"one stops too: {stop['line']}\n")
            client.key_value_set(_LEFT_KEY.format(me), "")
        except Exception:
            pass
        leave_now(code)

    def finish():
        with contextlib.suppress(Exception):  # process 0's word came first: it wins
            client.key_value_set(_STOP_KEY.format(me), _FINISHED)
        _watcher.join(_ACK_SECONDS)

    _watcher = threading.Thread(target=watch, name="cappy-watch-process-0", daemon=True)
    _watcher.start()
    atexit.register(finish)  # after JAX's own exit handler, so it runs before it


def tell_peers_and_leave(code, line, wait=True):
    """Process 0 leaving on an error: each process still running hears `line` and leaves
    first (its acknowledgement awaited up to _ACK_SECONDS, unless not `wait`: a peer is
    gone), then this one leaves. When every peer had already finished, they wait at JAX's
    shutdown barrier: meet them there (a normal exit with `code`) rather than vanish."""
    import json
    import sys

    import jax

    client = _runtime_client()  # (called only once the runtime has started)
    if client is None or jax.process_index() != 0:
        leave_now(code)
    word = json.dumps({"code": code, "line": line})
    running = []
    for peer in range(1, jax.process_count()):
        try:
            client.key_value_set(_STOP_KEY.format(peer), word)
            running.append(peer)
        except Exception:  # its own "finished" is there: it is at the shutdown barrier
            pass
    if not running:
        sys.exit(code)
    if wait:
        deadline = time.monotonic() + _ACK_SECONDS
        for peer in running:
            with contextlib.suppress(Exception):  # not acknowledged in time: leave anyway
                client.blocking_key_value_get(
                    _LEFT_KEY.format(peer), max(1, int(1000 * (deadline - time.monotonic()))))
        time.sleep(0.5)  # each peer leaves right after its acknowledgement: let it go first
    leave_now(code)


def leave_now(code):
    """Exit without JAX's shutdown barrier, which waits for peers that are gone and then
    aborts with pages of log."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe must not keep it here
            stream.flush()
    os._exit(code)
