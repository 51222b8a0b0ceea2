"""Quiet TensorFlow start-up for the `genserve` command (`genserve --verbose` keeps it).

TF 2.21 logs through absl from C++ straight to file descriptor 2, before
TF_CPP_MIN_LOG_LEVEL is consulted ("All log messages before absl::InitializeLog() ...", oneDNN,
"Could not find cuda drivers", cuInit), so the only reliable silencer is to point fd 2 elsewhere
while TensorFlow loads. The finder below does that around the first `import tensorflow` (whoever
imports it), replays the captured text if the import fails, and then lowers the Python-side loggers
(the TF1 loader's deprecation warnings, absl warnings) to errors. `genserve --verbose` skips it.

    python -c "from genserve.cli.quiet import install_quiet_tensorflow; install_quiet_tensorflow(); import tensorflow"
"""

from __future__ import annotations

import os

VERBOSE_ENV = "GENSERVE_VERBOSE"


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
        uninstall_quiet_tensorflow()
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


_FINDER = _QuietTensorFlowFinder()


def quiet_python_loggers() -> None:
    """TensorFlow's and absl's Python loggers at ERROR; TF/Keras deprecation warnings off."""
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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


def install_quiet_tensorflow() -> None:
    """Silence TensorFlow's start-up chatter for this process (no-op if TF is loaded, or with
    $GENSERVE_VERBOSE=1). Called by the `genserve` entry point before any command runs."""
    import sys

    if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        quiet_python_loggers()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall_quiet_tensorflow() -> None:
    """Undo install_quiet_tensorflow's import hook (`--verbose`)."""
    import sys

    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
