"""Test configuration: 8 simulated CPU devices and a fixed-seed key.

The device count must be set before JAX initialises its backend, so it happens here, at import of
conftest, before any test module imports jax.numpy or touches a device.
"""
import fcntl
import json
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache per test session, shared by the xdist workers and the subprocesses the tests
# start (they inherit the environment): the same program compiled again (another test building the same network,
# a resumed run in a fresh process) is loaded instead of recompiled. A compiled program is a pure function of its
# HLO and compile options, so results are unchanged; only compile time is saved. The session that made the
# folder removes it at the end; a folder given in the environment is used as is and kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="sde_jax_test_jit_cache_")
    os.environ["SDE_JAX_TEST_JIT_CACHE_OWNER"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


def _checkpoints_written_by_one_replica():
    """Checkpoints in the tests write each replicated array from one device, not in slices from all 8.

    orbax's default on CPU and TPU ("replica-parallel") splits every replicated array into one slice per
    device, which compiles a slicing program per array shape: about 200 compiles, 16 s, at the first save of
    an image model's train state on the 8 simulated devices. One process writes every slice either way, so
    the files are the same; only the test's time is saved. (Tests only: users keep orbax's default, which
    helps when several hosts share the writing.)
    """
    import orbax.checkpoint as ocp

    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)


_checkpoints_written_by_one_replica()

NUM_DEVICES = 8

_UNOPTIMISED = "JAX_DISABLE_MOST_OPTIMIZATIONS"
_LEVEL = {"unoptimised": os.environ.get(_UNOPTIMISED, "") not in ("", "0", "false", "False")}
_LEVEL["unoptimised_by_user"] = _LEVEL["unoptimised"]     # set for the whole session: every test compiles so


@pytest.hookimpl(tryfirst=True)     # before the test's fixtures are set up
def pytest_runtest_setup(item):
    """Tests marked ``compile_bound`` compile with XLA's CPU backend optimisations off.

    Such a test spends most of its time compiling (the image networks, training steps, solvers) and little
    running what it compiled; ``jax_disable_most_optimizations`` (LLVM level 0, no expensive passes) cuts the
    compile time of an image network's training step by a third (measured: 49 -> 31 s). The programs compute
    the same operations, so what the tests check is unchanged, and the processes a marked test starts inherit
    the setting through the environment. Users' programs keep XLA's default. The flag is not part of JAX's
    in-memory compilation cache key, so the caches are cleared whenever the next test wants the other setting:
    no test runs a program compiled under the other one (the persistent cache keys on the options and keeps
    the two apart).

    Mark a test only after measuring it both ways: a test whose loops run long can get slower unoptimised (the
    digits end-to-end test: 229 -> 368 s). The marked ones: first the tests that spent 60% or more of their
    time compiling and over 5 s (a compile-time hook per test); then the tests over 1.5 s spending 50% or more
    compiling, run as one set at each setting and marked where the unoptimised run was faster summed over the
    function's parameters (that set: 746 -> 652 test-seconds, the marked part 680 -> 565); then five
    subprocess and end-to-end tests timed one by one (toy2d's run and resume: 171 -> 94 s).
    """
    unoptimised = item.get_closest_marker("compile_bound") is not None or _LEVEL["unoptimised_by_user"]
    if unoptimised != _LEVEL["unoptimised"]:
        jax.clear_caches()
        jax.config.update("jax_disable_most_optimizations", unoptimised)
        if unoptimised:
            os.environ[_UNOPTIMISED] = "1"
        else:
            os.environ.pop(_UNOPTIMISED, None)
        _LEVEL["unoptimised"] = unoptimised


class ShapeRecorder:
    """A plain (non-pytree) score recording the shapes it is traced with (a Python side effect)."""

    def __init__(self, inner):
        self.inner, self.shapes = inner, set()

    def __call__(self, x, t):
        self.shapes.add(x.shape)
        return self.inner(x, t)


def build_once(tmp_path_factory, name, build):
    """``build(directory) -> JSON-able`` runs once per test session, however many xdist workers need it; each
    caller gets its own copy of the directory and the returned value.

    A module-scoped fixture runs once per *worker* that runs one of the module's tests, and worksteal spreads a
    module's tests over both workers: an expensive fixture (training a model) would be built twice. Here the
    first worker builds under a file lock in the session's shared temporary folder and the other waits for it;
    the copy keeps the tests that write into the directory apart. A failed build leaves no result, so the next
    caller builds again."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    shared, done = root / f"shared_{name}", root / f"shared_{name}.json"
    with open(root / f"shared_{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.exists():
                shutil.rmtree(shared, ignore_errors=True)
                shared.mkdir()
                value = build(str(shared))
                done.write_text(json.dumps(value))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    own = tmp_path_factory.mktemp(name)
    shutil.copytree(shared, own, dirs_exist_ok=True)
    return str(own), json.loads(done.read_text())


@pytest.fixture
def key():
    """A fixed-seed typed PRNG key; tests derive everything else from it."""
    return jax.random.key(0)


@pytest.fixture
def x64():
    """Enable float64 for the duration of one test (exactness against closed forms)."""
    with jax.enable_x64(True):
        yield


def pytest_sessionfinish(session, exitstatus):
    """The process that created the session's compilation cache removes it."""
    if os.environ.get("SDE_JAX_TEST_JIT_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
