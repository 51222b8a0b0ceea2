"""Quiet start-up for the `genserve` command and the example scripts (`genserve --verbose` keeps it).

Three libraries write log lines that mean nothing to a user and break one-line errors:
- TensorFlow 2.21 logs through absl from C++ straight to file descriptor 2. Its start-up lines come
  before absl::InitializeLog ("All log messages before absl::InitializeLog() ...", "Could not find cuda
  drivers", cpu_feature_guard) and ignore every setting, so the only silencer is to point fd 2
  elsewhere while TensorFlow loads: the finder below does that around the first `import tensorflow`
  (whoever imports it), replays the captured text if the import fails (not on Ctrl-C), and then lowers
  the Python-side loggers to errors. Later lines (cuInit, grappler's "remapper failed", oneDNN's
  "supports DT_INT32 only on platforms with AVX-512") are ERROR-level logs of optimisations that fall
  back by themselves: TF_CPP_MIN_LOG_LEVEL=3 hides them (a real failure still raises in Python).
- gRPC's C core logs TLS handshake failures (ssl_transport_security.cc) that the clients already turn
  into one line: GRPC_VERBOSITY=NONE.
- Ray Data warns "Progress bars disabled": RAY_DATA_LOG_LEVEL=ERROR (genserve.batch.executors honours
  it). Not RAY_BACKEND_LOG_LEVEL: Ray announces that variable in a log line of its own; the batch
  engine avoids the cause of Ray's core_worker.cc line instead (max_restarts=0).
A failure in any of them still reaches the user as a Python exception, which the commands print in one
line. Variables the user set are left alone. `--verbose` (or GENSERVE_VERBOSE=1) skips all of it.

    python -c "from genserve.cli.quiet import install_quiet; install_quiet(); import tensorflow"
"""

from __future__ import annotations

import os

VERBOSE_ENV = "GENSERVE_VERBOSE"
# Set (if unset) while quiet: the levels that hide the lines described above.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "NONE", "RAY_DATA_LOG_LEVEL": "ERROR"}
_set_by_us: set[str] = set()


class _QuietLoader:
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        import sys
        import tempfile

        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self._loader.exec_module(module)
                module.config.list_physical_devices()  # CUDA probing (cuInit) logs here, not at import
            except (KeyboardInterrupt, SystemExit):
                raise  # the user stopped it: the start-up lines explain nothing
            except BaseException:
                os.dup2(saved, 2)
                captured.seek(0)
                os.write(2, captured.read()[-20000:])  # the reason a failed import gave
                raise
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        quiet_python_loggers()


class _QuietTensorFlowFinder:
    """A sys.meta_path finder wrapping the loader of the top-level `tensorflow` package."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        _remove_finder()
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


_FINDER = _QuietTensorFlowFinder()


def _remove_finder() -> None:
    import sys

    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def quiet_python_loggers() -> None:
    """TensorFlow's and absl's Python loggers at ERROR; TF/Keras deprecation warnings off."""
    import logging
    import warnings

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    for module in ("tensorflow", "keras", "tf_keras", "absl"):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)


def verbose_requested(argv: list[str]) -> bool:
    """True for `genserve --verbose ...` (the option goes before the command) or GENSERVE_VERBOSE=1."""
    if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return True
    for arg in argv:
        if arg == "--verbose":
            return True
        if not arg.startswith("-"):
            return False  # the command name: options after it are the command's
    return False


def install_quiet() -> None:
    """Silence TensorFlow's, gRPC's and Ray's start-up and optimiser chatter for this process (no-op
    with $GENSERVE_VERBOSE=1). Called by the `genserve` entry point before any command is imported, and
    by the example scripts before they import grpc or tensorflow."""
    import sys

    if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return
    for name, value in QUIET_ENV.items():
        if name not in os.environ:
            os.environ[name] = value
            _set_by_us.add(name)
    if "tensorflow" in sys.modules:
        quiet_python_loggers()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall_quiet() -> None:
    """Undo install_quiet (`--verbose`): the import hook and the variables it set. Libraries already
    loaded keep the level they read."""
    _remove_finder()
    for name in list(_set_by_us):
        os.environ.pop(name, None)
        _set_by_us.discard(name)
